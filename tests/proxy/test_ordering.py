"""The requests of one dialog are relayed in the order they arrived.

A UA sends the ACK of a 2xx and, a moment later, the BYE. The ACK is relayed statelessly
(RFC 3261 §16.11 has no transaction for it) in a task of its own, the BYE in its server
transaction's task: trio runs tasks in no promised order, so without care the BYE can
overtake the ACK, and a callee that waits for its ACK (sipp's uas does) aborts the call.
"""

from __future__ import annotations

import trio

from triosip.script.api import RequestContext, Routes, sleep
from triosip.testing.proxy import open_udp_peer, start_proxy


async def test_a_bye_waits_for_the_ack_sent_before_it() -> None:
    # This used to relay the BYE first: its route ran at once while the ACK's waited.
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        if req.method == "ACK":
            await sleep(0.2)  # a slow ACK route: a lookup, a log to a database
        await req.relay(req.params["callee"])

    with trio.fail_after(5):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            routes.params = {"callee": callee.destination}
            running = await start_proxy(nursery, routes)
            uri = f"sip:bob@{callee.destination.split(':', 1)[1]}"
            ack = caller.request("ACK", uri, call_id="dialog-1", to_tag="callee")
            bye = caller.request("BYE", uri, call_id="dialog-1", cseq=2, to_tag="callee")
            await caller.send(ack, running.udp)
            await caller.send(bye, running.udp)
            first, _ = await callee.receive_request()
            second, source = await callee.receive_request()
            assert (first.method, second.method) == ("ACK", "BYE")
            await callee.respond(second, 200, source)
            assert (await caller.receive_response()).status == 200
            running.stop()
