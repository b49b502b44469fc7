"""tm's fr timers through a real proxy, on trio's mock clock (``autojump_clock``).

The caller and the callee are `UdpPeer`s on 127.0.0.1 in this process (sipp can't follow
a mock clock; a datagram between two sockets of one process is readable before the clock
can jump). Each test sends an INVITE at t0 and asserts when each message came, to the
millisecond of virtual time: fr_timeout gives a 408 that the failure route sees; a
provisional reply moves the branch's deadline to fr_inv_timeout, which ends in a 408
upstream and a CANCEL downstream; a route may set either timer for its transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio

from triosip.script.api import FailureContext, RequestContext, Routes, sleep
from triosip.sip import Response
from triosip.testing.proxy import RunningProxy, UdpPeer, open_udp_peer, start_proxy

if TYPE_CHECKING:
    from collections.abc import Callable

    from triosip.sip import Request

# The virtual time it all may take; the longest schedule here ends at ~45 s (Timer D/K
# and the like included, once the calls are over).
LIMIT = 120
# Virtual time: only the scheduler's own rounding. Typed as returning Any: an approx
# compares equal to the floats near it, which mypy cannot know.
EXACT: Callable[[float], Any] = pytest.approx


class Recorder:
    """Routes that relay every INVITE to ``params["callee"]`` and note each failure route
    run as (status, virtual time); a route may set the timers by Request-URI user."""

    def __init__(self) -> None:
        self.failures: list[tuple[int, float]] = []
        self.after_sleep = False
        self.routes = Routes()
        self.routes.request(self.main)
        self.routes.failure(self.failed)

    async def main(self, req: RequestContext) -> None:
        user = req.ruri_user
        if user == "quick":
            req.fr_timeout = 0.5
        elif user == "patient":
            req.fr_inv_timeout = 3.0
        req.on_failure(self.failed)
        if user == "slow-route":
            await sleep(10)  # an op longer than fr_timeout: cancelled with the route
            self.after_sleep = True
        await req.relay(req.params["callee"])

    async def failed(self, req: FailureContext) -> None:
        self.failures.append((req.status, trio.current_time()))


async def run_proxy(
    nursery: trio.Nursery,
    recorder: Recorder,
    callee: UdpPeer,
    *,
    fr_timeout: float,
    fr_inv_timeout: float,
) -> RunningProxy:
    return await start_proxy(
        nursery,
        recorder.routes,
        params={"callee": f"udp:{callee.address.host_port}"},
        fr_timeout=fr_timeout,
        fr_inv_timeout=fr_inv_timeout,
    )


def timeline(peer: UdpPeer, since: float) -> list[tuple[str, float]]:
    """What `peer` received: ``"INVITE"`` or ``"408"``, with the virtual time since `since`."""
    return [
        (
            str(r.message.status) if isinstance(r.message, Response) else r.message.method,
            round(r.at - since, 3),
        )
        for r in peer.received
    ]


async def call(caller: UdpPeer, proxy: RunningProxy, user: str) -> tuple[Request, float]:
    invite = caller.request("INVITE", f"sip:{user}@example.com")
    await caller.send(invite, proxy.udp)
    return invite, trio.current_time()


async def test_fr_timeout_gives_408_and_the_failure_route_sees_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    recorder = Recorder()
    with trio.fail_after(LIMIT):
        async with open_udp_peer() as caller, open_udp_peer() as callee, trio.open_nursery() as n:
            proxy = await run_proxy(n, recorder, callee, fr_timeout=2.0, fr_inv_timeout=10.0)
            invite, t0 = await call(caller, proxy, "bob")
            response = await caller.receive_response()
            await caller.send(caller.ack(invite, response), proxy.udp)
            # The callee never answers: the branch's client transaction is stopped at
            # 2 s, with no CANCEL (RFC 3261 §9.1: none before a provisional response).
            await trio.sleep(40)
            stats = proxy.proxy.transactions.statistics()
            proxy.stop()

    assert response.status == 408
    assert timeline(caller, t0) == [("100", 0.0), ("408", 2.0)]
    assert recorder.failures == [(408, EXACT(t0 + 2.0))]
    # Timer A: the INVITE again at T1, then 2*T1 later, until the fr timer stopped it.
    assert timeline(callee, t0) == [("INVITE", 0.0), ("INVITE", 0.5), ("INVITE", 1.5)]
    # The transaction ended, and its branch with it: nothing is left running.
    assert (stats.server_active, stats.client_active) == (0, 0)


async def test_provisional_reply_moves_fr_timeout_to_fr_inv_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    recorder = Recorder()
    with trio.fail_after(LIMIT):
        async with open_udp_peer() as caller, open_udp_peer() as callee, trio.open_nursery() as n:
            proxy = await run_proxy(n, recorder, callee, fr_timeout=2.0, fr_inv_timeout=10.0)
            invite, t0 = await call(caller, proxy, "bob")
            relayed, upstream = await callee.receive_request("INVITE")
            await trio.sleep(1.0)
            await callee.respond(relayed, 180, upstream)
            # No answer after the 180: at 1 + 10 s, not at 2 s, the proxy gives up on
            # the branch, CANCELs it (RFC 3261 §16.8) and answers 408 upstream.
            cancel, source = await callee.receive_request("CANCEL")
            await callee.respond(cancel, 200, source)
            await callee.respond(relayed, 487, upstream)
            await callee.receive_request("ACK")  # the proxy's, for the 487 (§17.1.1.3)
            response = await caller.receive_response()
            await caller.send(caller.ack(invite, response), proxy.udp)
            await trio.sleep(40)
            stats = proxy.proxy.transactions.statistics()
            proxy.stop()

    assert response.status == 408
    assert timeline(caller, t0) == [("100", 0.0), ("180", 1.0), ("408", 11.0)]
    assert recorder.failures == [(408, EXACT(t0 + 11.0))]
    assert timeline(callee, t0) == [
        ("INVITE", 0.0),
        ("INVITE", 0.5),  # Timer A, before the 180 stopped it
        ("CANCEL", 11.0),
        ("ACK", 11.0),
    ]
    assert cancel.cseq.number == relayed.cseq.number
    assert cancel.top_via.branch == relayed.top_via.branch
    assert (stats.server_active, stats.client_active) == (0, 0)


async def test_a_provisional_reply_may_bring_the_deadline_forward(
    autojump_clock: trio.abc.Clock,
) -> None:
    # fr_inv_timeout shorter than what is left of fr_timeout: the 180 at 1 s brings the
    # branch's deadline forward, from 20 s to 1 + 3 s. (The response loop moves its alarm
    # only for a deadline brought forward; this guards that case.)
    recorder = Recorder()
    with trio.fail_after(LIMIT):
        async with open_udp_peer() as caller, open_udp_peer() as callee, trio.open_nursery() as n:
            proxy = await run_proxy(n, recorder, callee, fr_timeout=20.0, fr_inv_timeout=3.0)
            invite, t0 = await call(caller, proxy, "bob")
            relayed, upstream = await callee.receive_request("INVITE")
            await trio.sleep(1.0)
            await callee.respond(relayed, 180, upstream)
            cancel, source = await callee.receive_request("CANCEL")
            await callee.respond(cancel, 200, source)
            await callee.respond(relayed, 487, upstream)
            response = await caller.receive_response()
            await caller.send(caller.ack(invite, response), proxy.udp)
            proxy.stop()

    assert response.status == 408
    assert timeline(caller, t0) == [("100", 0.0), ("180", 1.0), ("408", 4.0)]
    assert recorder.failures == [(408, EXACT(t0 + 4.0))]


async def test_route_sets_the_timers_of_its_transaction(autojump_clock: trio.abc.Clock) -> None:
    # The config says fr 5 s, fr_inv 30 s; the route shortens fr_timeout for "quick" and
    # fr_inv_timeout for "patient", and leaves "bob" alone. Three calls at once.
    recorder = Recorder()
    with trio.fail_after(LIMIT):
        async with open_udp_peer() as caller, open_udp_peer() as callee, trio.open_nursery() as n:
            proxy = await run_proxy(n, recorder, callee, fr_timeout=5.0, fr_inv_timeout=30.0)
            calls = {}
            for user in ("quick", "patient", "bob"):
                calls[user] = await call(caller, proxy, user)
            t0 = calls["quick"][1]
            for _ in range(3):
                relayed, upstream = await callee.receive_request("INVITE")
                if relayed.uri.user == "patient":
                    await trio.sleep(1.0)
                    await callee.respond(relayed, 180, upstream)
                    break
            users = {invite.call_id: user for user, (invite, _) in calls.items()}
            answers: dict[str, tuple[int, float]] = {}
            while len(answers) < len(calls):
                response = await caller.receive_response()
                user = users[response.call_id]
                await caller.send(caller.ack(calls[user][0], response), proxy.udp)
                # The first final of each call; the quick one's 408 comes again at 1 s
                # (Timer G), as its ACK waited for the patient call's 180 to be sent.
                first = next(
                    r
                    for r in caller.received
                    if isinstance(r.message, Response)
                    and r.message.call_id == response.call_id
                    and r.message.status >= 200
                )
                answers.setdefault(user, (response.status, round(first.at - t0, 3)))
            proxy.stop()

    assert answers == {"quick": (408, 0.5), "patient": (408, 4.0), "bob": (408, 5.0)}
    assert sorted(round(at - t0, 3) for _, at in recorder.failures) == [0.5, 4.0, 5.0]


async def test_fr_timeout_cancels_a_slow_request_route(autojump_clock: trio.abc.Clock) -> None:
    # The route awaits an op for 10 s; fr_timeout (2 s) cancels it there: the route never
    # gets past it, nothing is relayed, the failure route sees a 408, the caller gets it.
    recorder = Recorder()
    with trio.fail_after(LIMIT):
        async with open_udp_peer() as caller, open_udp_peer() as callee, trio.open_nursery() as n:
            proxy = await run_proxy(n, recorder, callee, fr_timeout=2.0, fr_inv_timeout=10.0)
            invite, t0 = await call(caller, proxy, "slow-route")
            response = await caller.receive_response()
            await caller.send(caller.ack(invite, response), proxy.udp)
            await trio.sleep(40)
            stats = proxy.proxy.statistics()
            proxy.stop()

    assert response.status == 408
    assert timeline(caller, t0) == [("100", 0.0), ("408", 2.0)]
    assert recorder.failures == [(408, EXACT(t0 + 2.0))]
    assert not recorder.after_sleep
    assert callee.received == []
    assert stats.requests_forwarded == {}
    assert stats.transactions_active == 0
