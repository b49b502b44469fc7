"""A finished call leaves no reference cycle behind.

What a call allocates must go when its last reference does (reference counting), not wait
for the cyclic garbage collector: a proxy that leaves a cycle per call makes the collector
run often and walk every live object, a cost paid on every call (about a sixth of the
proxy's CPU when the transactions were tied in cycles, bench/RESULTS.md).
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest
import trio

from triosip.proxy import ProxyTransaction
from triosip.proxy._transaction import Branch
from triosip.script.api import RequestContext, Routes
from triosip.testing.proxy import open_udp_peer, start_proxy
from triosip.transaction import ClientTransaction, ServerTransaction

if TYPE_CHECKING:
    from collections.abc import Iterator

_OURS = (ProxyTransaction, ServerTransaction, ClientTransaction, Branch)


@contextmanager
def _cycles_of_ours() -> Iterator[list[str]]:
    """The names of our objects that only the cyclic collector freed in the block."""
    found: list[str] = []
    gc.collect()
    gc.disable()
    try:
        yield found
    finally:
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            found += sorted({type(o).__name__ for o in gc.garbage if isinstance(o, _OURS)})
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()


@pytest.mark.parametrize("final", [200, 486])
async def test_a_finished_call_leaves_no_cycle(final: int) -> None:
    # This used to leave every call's transactions in a cycle (a branch, its client
    # transaction and the callback naming the branch), freed only by the collector.
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        await req.relay(req.params["callee"])

    with _cycles_of_ours() as cycles, trio.fail_after(5):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            routes.params = {"callee": callee.destination}
            running = await start_proxy(nursery, routes)
            uri = f"sip:bob@{callee.destination.split(':', 1)[1]}"
            invite = caller.request("INVITE", uri, call_id="garbage-1")
            await caller.send(invite, running.udp)
            forwarded, source = await callee.receive_request("INVITE")
            await callee.respond(forwarded, 180, source)
            await callee.respond(forwarded, final, source)
            answer = await caller.receive_response()
            assert answer.status == final
            if final == 200:
                ack = caller.request("ACK", uri, call_id="garbage-1", to_tag="callee")
                bye = caller.request("BYE", uri, call_id="garbage-1", cseq=2, to_tag="callee")
                await caller.send(ack, running.udp)
                await caller.send(bye, running.udp)
                forwarded_bye, source = await callee.receive_request("BYE")
                await callee.respond(forwarded_bye, 200, source)
                assert (await caller.receive_response(method="BYE")).status == 200
            else:
                await caller.send(caller.ack(invite, answer), running.udp)
            # Every transaction ends with the proxy, held ones too: what is left of them
            # must go by reference counting alone.
            running.stop()
    assert cycles == []


async def test_a_request_the_proxy_rejects_leaves_no_cycle() -> None:
    # This used to leave the transaction in a cycle (its alarm's callback names it) when
    # it was answered before waiting for any branch: Max-Forwards 0 here (483).
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        raise AssertionError("a request with Max-Forwards 0 never reaches the route")

    with _cycles_of_ours() as cycles, trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            running = await start_proxy(nursery, routes)
            await caller.send(caller.request("OPTIONS", max_forwards=0), running.udp)
            assert (await caller.receive_response()).status == 483
            running.stop()
    assert cycles == []
