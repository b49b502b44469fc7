"""A branch whose transport fails (RFC 3261 §16.9, §18.1.1): the caller hears of it at once.

The callee in these tests is a `UdpPeer`: it listens on UDP only, so a TCP connection to
its port is refused, as it is by any UA that never opened TCP.
"""

from __future__ import annotations

import trio

from triosip.script.api import FailureContext, RequestContext, Routes
from triosip.testing.proxy import open_udp_peer, start_proxy

# Large enough that RFC 3261 §18.1.1 sends it over TCP (proxy/_transaction.py UDP_SIZE_LIMIT).
LARGE_BODY = b"x" * 7000


async def test_a_large_request_refused_over_tcp_is_retried_over_udp() -> None:
    # This used to never reach the callee: the TCP connection to the UDP-only callee was
    # refused ("connection refused" in the log), the branch became a 503, and the caller
    # got a 500 for a request the callee would have answered.
    with trio.fail_after(5):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            running = await start_proxy(nursery, None, params={"downstream": callee.destination})
            options = caller.request("OPTIONS", body=LARGE_BODY)
            sent_at = trio.current_time()
            await caller.send(options, running.udp)
            # RFC 3261 §18.1.1: sent over TCP only for its size, refused: retried over UDP.
            with trio.fail_after(1):
                relayed, source = await callee.receive_request("OPTIONS")
            assert relayed.top_via.transport == "UDP"
            assert relayed.body == LARGE_BODY
            await callee.respond(relayed, 200, source)
            response = await caller.receive_response()
            assert response.status == 200
            assert trio.current_time() - sent_at < 1
            running.stop()


def relay_with_failure_route(seen: list[int]) -> Routes:
    """Relay to ``downstream``, the failure route recording the status it sees."""
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        req.on_failure(failed)
        await req.relay(req.params["downstream"])

    @routes.failure
    async def failed(req: FailureContext) -> None:
        seen.append(req.status)

    return routes


async def test_a_branch_whose_transport_fails_is_a_503_at_once() -> None:
    # RFC 3261 §16.9: a transport error on a branch is a 503 from that branch: the failure
    # route sees it, and the caller, with nothing better, gets the 500 that §16.7 step 6
    # makes of a 503, at once rather than after Timer F.
    seen: list[int] = []
    with trio.fail_after(5):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            # An explicit TCP destination (not a switch for size): no UDP retry.
            downstream = f"tcp:{callee.address.host_port}"
            running = await start_proxy(
                nursery, relay_with_failure_route(seen), params={"downstream": downstream}
            )
            sent_at = trio.current_time()
            await caller.send(caller.request("OPTIONS"), running.udp)
            response = await caller.receive_response()
            assert trio.current_time() - sent_at < 0.5
            # Not the "Server Internal Error" of a route that raised: the operator can tell.
            assert (response.status, response.reason) == (500, "Next Hop Unavailable")
            assert seen == [503]
            assert callee.received == []
            running.stop()


async def test_a_large_request_retried_over_udp_reaches_the_failure_route() -> None:
    # The UDP retry is the same branch: its answer is what the failure route sees.
    seen: list[int] = []
    with trio.fail_after(5):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            running = await start_proxy(
                nursery, relay_with_failure_route(seen), params={"downstream": callee.destination}
            )
            await caller.send(caller.request("OPTIONS", body=LARGE_BODY), running.udp)
            await callee.answer(486)
            response = await caller.receive_response()
            assert response.status == 486
            assert seen == [486]
            running.stop()
