"""The proxy's counters after one call driven message by message: what each counts.

A caller and a callee (`UdpPeer`s) make one INVITE / 180 / 200 / ACK exchange through the
proxy; the counters must say what went over the wire, no more and no less.
"""

from __future__ import annotations

import trio

from triosip.script.api import RequestContext, Routes
from triosip.testing.proxy import open_udp_peer, start_proxy


def relay_to(downstream: str) -> Routes:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        if req.method == "INFO":
            await req.reply(403, "Forbidden")
            return
        await req.relay(downstream)

    return routes


async def test_one_call_counts_what_went_over_the_wire() -> None:
    with trio.fail_after(5):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            running = await start_proxy(nursery, relay_to(callee.destination))
            invite = caller.request("INVITE")
            await caller.send(invite, running.udp)
            await caller.receive_response(status=100)
            forwarded = await callee.answer(180, 200)
            ok = await caller.receive_response(status=200)
            ack = caller.request(
                "ACK", call_id=invite.call_id, to_tag=ok.to.tag, cseq=invite.cseq.number
            )
            await caller.send(ack, running.udp)
            await callee.receive_request("ACK")
            info = caller.request("INFO")
            await caller.send(info, running.udp)
            await caller.receive_response(status=403)
            proxy = running.proxy.statistics()
            layer = running.proxy.transactions.statistics()
            running.stop()

    assert forwarded.method == "INVITE"
    # This used to be {}: the 100 Trying the proxy sends for each INVITE was not counted.
    assert proxy.replies_generated == {"1xx": 1, "4xx": 1}
    assert proxy.replies_forwarded == {"1xx": 1, "2xx": 1}
    # Per status code, as Kamailio's sl:/tm: statistics: every reply sent upstream.
    assert proxy.replies_sent == {100: 1, 180: 1, 200: 1, 403: 1}
    assert proxy.requests_forwarded == {"INVITE": 1, "ACK": 1}
    # This used to be 1: the ACK of the 2xx, relayed on like any in-dialog request, was
    # counted as a stray.
    assert layer.strays == 0


async def test_a_stray_response_is_counted() -> None:
    with trio.fail_after(5):
        async with open_udp_peer() as peer, trio.open_nursery() as nursery:
            running = await start_proxy(nursery, relay_to(peer.destination))
            # A 486 to an INVITE the proxy never forwarded (its Via names the peer).
            await peer.respond(peer.request("INVITE"), 486, running.udp)
            # Then a request the proxy answers: read in order, so the 486 was counted.
            await peer.send(peer.request("INFO"), running.udp)
            await peer.receive_response(status=403)
            strays = running.proxy.transactions.statistics().strays
            running.stop()
    assert strays == 1
