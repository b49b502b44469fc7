"""A proxy with its management interface on 127.0.0.1, and the SIP peers that talk to it.

The proxy and the MI run in the test's nursery on free ports, through `serve_triosip`;
the MI is asked over HTTP as any operator's script would (through triosip's own HTTP client,
outside any op: its requests count in no statistics the MI shows), and SIP goes through
`triosip.testing`'s `UdpPeer` (the caller and the callee), or sipp where a real peer
matters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from triosip.app import serve_triosip
from triosip.mi import MIConfig
from triosip.ops._http import HttpPool
from triosip.testing.proxy import UdpPeer, local_config
from triosip.transport import Address

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from triosip.app import Running as App
    from triosip.proxy import Proxy
    from triosip.script import ScriptEnvironment
    from triosip.script.api import Routes
    from triosip.sip import Response

# Short RFC 3261 timers, so that a transaction that has answered ends within a second:
# Timer H and J are 64*T1 = 0.64 s, Timer I is T4.
FAST_TIMERS = {"t1": 0.01, "t2": 0.04, "t4": 0.05}


@dataclass(frozen=True)
class MIAnswer:
    """An answer of the MI: its status, header fields (by lower-case name) and body."""

    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class MIHttp:
    """Requests to the MI at `base_url` over one keep-alive pool."""

    def __init__(self, pool: HttpPool, base_url: str) -> None:
        self._pool = pool
        self._base_url = base_url

    async def request(
        self,
        method: str,
        target: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> MIAnswer:
        result = await self._pool.request(
            method,
            self._base_url + target,
            headers=headers,
            params=params,
            body=b"",
            content_type=None,
        )
        return MIAnswer(result.status, dict(result.headers), result.body)

    async def get(
        self,
        target: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> MIAnswer:
        return await self.request("GET", target, params=params, headers=headers)

    async def post(self, target: str) -> MIAnswer:
        return await self.request("POST", target)


@dataclass
class Running:
    """A proxy and its MI, running in a test's nursery."""

    proxy: Proxy
    sip: Address
    mi: MIHttp
    mi_address: tuple[str, int]

    async def tasks(self, **params: str) -> dict[str, Any]:
        response = await self.mi.get("/tasks", params=params)
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document

    async def stats(self) -> dict[str, Any]:
        response = await self.mi.get("/stats")
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document

    async def wait_for_tasks(self, predicate: Any, **params: str) -> dict[str, Any]:
        """Ask ``/tasks`` until `predicate(document)` holds (the caller bounds the time)."""
        while True:
            document = await self.tasks(**params)
            if predicate(document):
                return document
            await trio.sleep(0.02)


@contextlib.asynccontextmanager
async def run_proxy(
    routes: Routes | Path,
    *,
    params: Mapping[str, str] | None = None,
    environment: ScriptEnvironment | None = None,
    mi: MIConfig | None = None,
    **settings: Any,
) -> AsyncIterator[Running]:
    """Run `routes` (built in code, or a routes file the MI can reload) in a proxy on
    127.0.0.1 with its MI, both on free ports, through `serve_triosip`; `settings` are
    `Config` fields over the defaults here (fr 5 s, fr_inv 10 s, `FAST_TIMERS`)."""
    config = local_config(
        **{
            "listen": (Address("udp", "127.0.0.1", 0),),
            "fr_timeout": 5.0,
            "fr_inv_timeout": 10.0,
            "max_launched": 10,
            **FAST_TIMERS,
            "params": dict(params or {}),
            "mi": mi or MIConfig(port=0),
            **settings,
        }
    )
    code_routes = None if isinstance(routes, Path) else routes
    if isinstance(routes, Path):
        config = dataclasses.replace(config, routes_file=routes)
    async with trio.open_nursery() as nursery:
        running: App = await nursery.start(
            functools.partial(serve_triosip, config, routes=code_routes, environment=environment)
        )
        assert running.mi is not None
        base_url = f"http://{running.mi[0]}:{running.mi[1]}"
        # The MI speaks plain HTTP: a bare TLS context, without the system's CA store to load.
        pool = HttpPool(
            max_connections=4, timeout=10.0, ssl_context=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        )
        try:
            yield Running(running.proxy, running.listeners[0], MIHttp(pool, base_url), running.mi)
        finally:
            pool.close()
        nursery.cancel_scope.cancel()


@dataclass
class Call:
    """Requests of one call from `caller`, built as a UAC builds them (RFC 3261 §8.1.1)."""

    caller: UdpPeer
    proxy: Address
    call_id: str

    @classmethod
    def new(cls, caller: UdpPeer, proxy: Address) -> Call:
        return cls(caller, proxy, f"{os.urandom(6).hex()}@mi.test")

    @property
    def branch(self) -> str:
        return f"z9hG4bK-{self.call_id.split('@')[0]}"

    def build(self, method: str, *, cseq_method: str | None = None, to_tag: str = "") -> bytes:
        to = "<sip:bob@example.org>" + (f";tag={to_tag}" if to_tag else "")
        return (
            f"{method} sip:bob@example.org SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.caller.port};branch={self.branch}\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:alice@example.org>;tag=caller\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: 1 {cseq_method or method}\r\n"
            f"Contact: <sip:alice@127.0.0.1:{self.caller.port}>\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    async def send(self, method: str, **kwargs: Any) -> None:
        await self.caller.send(self.build(method, **kwargs), self.proxy)

    async def cancel(self) -> Response:
        """CANCEL the INVITE (RFC 3261 §9.1), take the 487 and ACK it (§17.1.1.3)."""
        await self.send("CANCEL")
        terminated = await self.caller.receive_response(status=487, method="INVITE")
        await self.send("ACK", to_tag=terminated.to.tag or "")
        return terminated


def walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    """`node` and every node under it, depth first."""
    nodes = [node]
    for child in node.get("children", ()):
        nodes.extend(walk(child))
    return nodes


def ops_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every op node of a ``/tasks`` document, under transactions or launched."""
    roots = document["transactions"] + document["launched"]
    return [node for root in roots for node in walk(root) if node.get("kind") == "op"]
