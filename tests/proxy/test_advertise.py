"""What the proxy calls itself: a wildcard listener, ``--advertise`` and ``--alias``.

The Via and Record-Route it writes must name an address its peers can reach, and every
name it is reached at must be "myself" (Route entries stripped, no loop with itself).
Real UDP peers on 127.0.0.1 talk to a proxy listening on 0.0.0.0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from triosip.script.api import RequestContext, Routes
from triosip.testing.proxy import UdpPeer, local_config, open_udp_peer, start_proxy
from triosip.transport import Address

if TYPE_CHECKING:
    from triosip.sip import Request

WILDCARD = Address("udp", "0.0.0.0", 0)


def via_host_port(request: Request) -> str:
    return request.header_lines("via")[0].split(";")[0]


async def call_and_bye(caller: UdpPeer, callee: UdpPeer, proxy: Address) -> tuple[str, str]:
    """An INVITE to the proxy's own address (its Request-URI names the proxy, as sipp's
    uac does), answered 200 by the callee, then a BYE along the Record-Route. Returns the
    INVITE's top Via and Record-Route as the callee got them."""
    invite = caller.request("INVITE", f"sip:bob@127.0.0.1:{proxy.port}")
    await caller.send(invite, proxy)
    forwarded = await callee.answer(200)
    ok = await caller.receive_response()
    assert ok.status == 200, ok  # this used to be 482 Loop Detected
    [record_route] = forwarded.header_lines("record-route")
    route = record_route
    ack = caller.request(
        "ACK",
        f"sip:bob@{callee.address.host_port}",
        call_id=invite.call_id,
        to_tag=ok.to.tag,
        headers=[("Route", route)],
    )
    await caller.send(ack, proxy)
    relayed_ack, _ = await callee.receive_request("ACK")  # statelessly, with a Via like ours
    assert relayed_ack.header_lines("via")[0].split(";")[0] == via_host_port(forwarded)
    bye = caller.request(
        "BYE",
        f"sip:bob@{callee.address.host_port}",
        call_id=invite.call_id,
        cseq=2,
        to_tag=ok.to.tag,
        headers=[("Route", route)],
    )
    await caller.send(bye, proxy)
    relayed, _ = await callee.receive_request("BYE")
    assert relayed.header_lines("route") == []  # ours, stripped: the proxy knew itself
    return forwarded.header_lines("via")[0], record_route


async def test_a_wildcard_listener_names_the_address_it_sends_from() -> None:
    with trio.fail_after(5):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            running = await start_proxy(
                nursery, None, params={"downstream": callee.destination}, listen=[WILDCARD]
            )
            port = running.udp.port
            proxy = Address("udp", "127.0.0.1", port)
            via, record_route = await call_and_bye(caller, callee, proxy)
            running.stop()
    # These used to name 0.0.0.0, where no reply can go.
    assert via.startswith(f"SIP/2.0/UDP 127.0.0.1:{port};branch=")
    assert record_route == f"<sip:127.0.0.1:{port};lr>"


async def test_advertise_names_the_listener_in_via_and_record_route() -> None:
    with trio.fail_after(5):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            config = local_config(listen=(WILDCARD,), advertise={WILDCARD: "sip.example.test:5999"})
            running = await start_proxy(
                nursery, None, params={"downstream": callee.destination}, config=config
            )
            proxy = Address("udp", "127.0.0.1", running.udp.port)
            via, record_route = await call_and_bye(caller, callee, proxy)
            running.stop()
    assert via.startswith("SIP/2.0/UDP sip.example.test:5999;branch=")
    assert record_route == "<sip:sip.example.test:5999;lr>"


def myself_routes() -> Routes:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        await req.reply(200 if req.ruri_is_myself else 404)

    return routes


async def test_aliases_and_every_local_address_are_myself() -> None:
    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            config = local_config(listen=(WILDCARD,), aliases=("proxy.example.test",))
            running = await start_proxy(nursery, myself_routes(), config=config)
            port = running.udp.port
            proxy = Address("udp", "127.0.0.1", port)
            answers = {}
            for uri in (
                f"sip:bob@127.0.0.1:{port}",
                f"sip:bob@127.0.0.2:{port}",  # loopback: local too
                f"sip:bob@PROXY.example.test:{port}",
                f"sip:bob@192.0.2.1:{port}",  # TEST-NET-1: not ours
                f"sip:bob@127.0.0.1:{port + 1 if port < 65535 else 1}",
                "sip:bob@elsewhere.example.test",
            ):
                await caller.send(caller.request("OPTIONS", uri), proxy)
                answers[uri.split("@")[1]] = (await caller.receive_response()).status
            running.stop()
    assert list(answers.values()) == [200, 200, 200, 404, 404, 404], answers
