"""The caller's side of the script API tests: one request at a time to a proxy started
with `start_proxy` (`triosip.testing.start_proxy` with the API tests' settings)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from triosip.testing import proxy as testing
from triosip.transport import Address

if TYPE_CHECKING:
    from collections.abc import Sequence

    import trio

    from triosip.proxy import Proxy
    from triosip.script import ScriptEnvironment
    from triosip.script.api import Routes
    from triosip.sip import Request, Response
    from triosip.testing.proxy import UdpPeer


@dataclass
class Call:
    """One request from the caller, so that the ACK of a failed INVITE can be built."""

    caller: UdpPeer
    proxy: Address
    request: Request

    @property
    def call_id(self) -> str:
        return self.request.call_id

    async def final_response(self) -> Response:
        """The final response; a failed INVITE's is ACKed (RFC 3261 §17.1.1.3)."""
        response = await self.caller.receive_response()
        assert response.call_id == self.call_id
        if self.request.method == "INVITE" and response.status >= 300:
            await self.caller.send(self.caller.ack(self.request, response), self.proxy)
        return response


async def send_request(
    proxy: Address,
    caller: UdpPeer,
    method: str = "MESSAGE",
    *,
    headers: Sequence[tuple[str, str]] = (),
) -> Call:
    call_id = os.urandom(6).hex()
    request = caller.request(
        method,
        "sip:bob@example.org",
        call_id=call_id,
        branch=f"z9hG4bK-{call_id}",
        from_uri="sip:alice@example.org",
        to_uri="sip:bob@example.org",
        headers=headers,
    )
    await caller.send(request, proxy)
    return Call(caller, proxy, request)


async def ask(proxy: Address, caller: UdpPeer, method: str = "MESSAGE") -> Response:
    """Send a request and return its final response."""
    call = await send_request(proxy, caller, method)
    return await call.final_response()


async def start_proxy(
    nursery: trio.Nursery, routes: Routes, environment: ScriptEnvironment
) -> tuple[Proxy, Address]:
    """Run `routes` in a proxy on 127.0.0.1 (and `environment`, for launch())."""
    running = await testing.start_proxy(
        nursery,
        routes,
        environment=environment,
        fr_timeout=5.0,
        fr_inv_timeout=10.0,
        listen=[Address("udp", "127.0.0.1", 0)],
    )
    return running.proxy, running.udp
