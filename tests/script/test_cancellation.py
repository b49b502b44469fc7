"""Promises 1 and 2 of docs/cancellation.md: an fr timeout or a CANCEL while an op is
pending cancels the op promptly (sqlite interrupted, PostgreSQL cancelled on the server,
HTTP connection closed, process group killed, thread waited for), the resume route never
runs, the failure route or the default 408/487 runs once, a retransmitted INVITE does not
run the route again, and nothing is left behind.

A test runs several calls at once through one proxy, one per way of running the op
(``async_``, plain ``await``, ``req.call``), with and without a failure route: each call's
request URI says which (`helpers.pending_op_routes`). The ops are real (a sqlite file, a
local HTTP server, processes, threads), so these tests run on the real clock, in fractions
of a second; the sleep op, which is only time, runs under `autojump_clock`.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio

from tests.support.ops import wait_until
from tests.support.script import (
    PENDING_KINDS,
    SETTLE,
    THREAD_SECONDS,
    Journal,
    assert_nothing_left,
    database_url,
    op_processes,
    open_harness,
    ops_started,
    pending_op_routes,
)
from triosip.testing.leaks import Resources
from triosip.transaction import TimerConfig

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support.script import Call

pytestmark = pytest.mark.usefixtures("nothing_left_behind")

# The proxy's fr_timeout in the real-clock tests, and how late after it (or after a CANCEL)
# the answer may come on this noisy 2-core machine; the ops would take a minute.
FR = 0.2
SLACK = 0.3

# Every way a route runs an op, with (armed) and without (bare) a failure route.
MODES = [f"{mode}.{armed}" for mode in ("async", "await", "call") for armed in ("armed", "bare")]

# A CANCEL's server transaction lasts 64*T1 after its 200 (RFC 3261 §17.2.2, Timer J): a
# small T1 lets it end within the test.
SHORT_T1 = TimerConfig(t1=0.002, t2=0.008, t4=0.01)


def _earliest_answer(kind: str) -> float:
    """When, after it started, a cancelled op of `kind` can have ended at the soonest: a
    thread can't be stopped, only waited for."""
    return THREAD_SECONDS if kind == "thread" else 0.0


@pytest.mark.parametrize("kind", PENDING_KINDS)
async def test_fr_timeout_cancels_the_pending_op(kind: str, tmp_path: Path) -> None:
    journal = Journal()
    routes = pending_op_routes(journal)
    db_url = database_url(kind)  # starts the test's PostgreSQL server on first use
    with trio.fail_after(5):
        async with open_harness(routes, tmp_path, fr_timeout=FR, db_url=db_url) as harness:
            assert harness.http is not None
            routes.params = {"http": harness.http.url, "dir": str(tmp_path)}
            before = Resources.now()
            calls = [await harness.caller.invite(f"{kind}.{mode}") for mode in MODES]
            await wait_until(
                lambda: ops_started(harness, kind, calls, before) or any(c.final() for c in calls)
            )
            assert ops_started(harness, kind, calls, before), "the ops ended before the fr timer"
            processes = op_processes(harness, kind, calls, before)
            for call in calls:
                await harness.caller.final_response(call)
            await assert_nothing_left(
                harness,
                before,
                processes=processes,
                cancelled_rests=len(calls) if kind.startswith("rest") else 0,
            )

    for call in calls:
        final = call.final()
        assert final is not None
        took = final.at - call.sent_at
        earliest = max(FR, _earliest_answer(kind))
        assert earliest <= took < earliest + SLACK, f"{call.user}: answered after {took:.3f} s"
        if call.user.endswith(".armed"):
            # The failure route ran once, saw the 408, and its answer went upstream.
            assert journal.kinds(call.call_id) == ["request", "failure"], call.user
            assert journal.of(call.call_id, "failure") == [408]
            assert (final.response.status, final.response.reason) == (480, "Failure Route Saw 408")
        else:
            assert journal.kinds(call.call_id) == ["request"], call.user
            assert final.response.status == 408
        assert set(call.finals()) == {final.response.status}, call.user
        assert call.statuses()[0] == 100


async def test_fr_timeout_cancels_a_sleep_on_time(tmp_path: Path, autojump_clock: object) -> None:
    journal = Journal()
    routes = pending_op_routes(journal)
    with trio.fail_after(300):
        async with open_harness(routes, tmp_path, fr_timeout=30.0, resources=False) as harness:
            before = Resources.now()
            calls = [await harness.caller.invite(f"sleep.{mode}") for mode in MODES]
            for call in calls:
                await harness.caller.final_response(call)
            answered_at = trio.current_time()
            # Long after the sleep would have ended: still no resume route.
            await trio.sleep(100)
            await assert_nothing_left(harness, before, processes=[], cancelled_rests=0)

    for call in calls:
        final = call.final()
        assert final is not None
        assert final.at == pytest.approx(call.sent_at + 30.0), call.user  # the fr timer, exactly
        if call.user.endswith(".armed"):
            assert journal.kinds(call.call_id) == ["request", "failure"], call.user
            assert journal.of(call.call_id, "failure") == [408]
            assert final.response.status == 480
        else:
            assert journal.kinds(call.call_id) == ["request"], call.user
            assert final.response.status == 408
    assert answered_at == pytest.approx(calls[-1].sent_at + 30.0)


@pytest.mark.parametrize("kind", PENDING_KINDS)
async def test_cancel_cancels_the_pending_op_at_once(kind: str, tmp_path: Path) -> None:
    journal = Journal()
    routes = pending_op_routes(journal)
    db_url = database_url(kind)  # starts the test's PostgreSQL server on first use
    with trio.fail_after(5):
        # fr_timeout is long: only the CANCEL can end these calls within the test.
        async with open_harness(
            routes, tmp_path, fr_timeout=30.0, timers=SHORT_T1, db_url=db_url
        ) as harness:
            assert harness.http is not None
            routes.params = {"http": harness.http.url, "dir": str(tmp_path)}
            before = Resources.now()
            calls = [await harness.caller.invite(f"{kind}.{mode}") for mode in MODES]
            await wait_until(lambda: ops_started(harness, kind, calls, before))
            await trio.sleep(SETTLE)
            processes = op_processes(harness, kind, calls, before)
            cancelled_at = {}
            for call in calls:
                cancelled_at[call.call_id] = trio.current_time()
                await harness.caller.send(call.build("CANCEL"))
            for call in calls:
                await harness.caller.final_response(call, "CANCEL")
                await harness.caller.final_response(call)
            await assert_nothing_left(
                harness,
                before,
                processes=processes,
                cancelled_rests=len(calls) if kind.startswith("rest") else 0,
            )

    for call in calls:
        cancel_answer, final = call.final("CANCEL"), call.final()
        assert cancel_answer is not None
        assert final is not None
        assert cancel_answer.response.status == 200
        assert cancel_answer.at - cancelled_at[call.call_id] < SLACK
        # RFC 3261 §16.10 with no branch: the 487 comes from us, as soon as the op is gone,
        # whether or not a failure route is armed (a CANCEL does not run it).
        assert set(call.finals()) == {487}, call.user
        earliest = call.sent_at + _earliest_answer(kind)
        latest = max(cancelled_at[call.call_id], earliest) + SLACK
        assert earliest <= final.at < latest, f"{call.user}: 487 {final.at - call.sent_at:.3f} s"
        assert journal.kinds(call.call_id) == ["request"], call.user


async def test_cancel_cancels_a_sleep_at_once(tmp_path: Path, autojump_clock: object) -> None:
    journal = Journal()
    routes = pending_op_routes(journal)
    with trio.fail_after(300):
        async with open_harness(routes, tmp_path, fr_timeout=30.0, resources=False) as harness:
            before = Resources.now()
            calls = [await harness.caller.invite(f"sleep.{mode}") for mode in MODES]
            await trio.sleep(1)
            for call in calls:
                await harness.caller.send(call.build("CANCEL"))
            for call in calls:
                await harness.caller.final_response(call)
            answered_at = trio.current_time()
            await trio.sleep(100)  # long after the sleep would have ended
            await assert_nothing_left(harness, before, processes=[], cancelled_rests=0)

    assert answered_at == pytest.approx(calls[0].sent_at + 1)  # no time passed: at once
    for call in calls:
        assert call.finals("CANCEL") == [200]
        assert set(call.finals()) == {487}, call.user
        assert journal.kinds(call.call_id) == ["request"], call.user


@pytest.mark.parametrize("mode", ["async.bare", "await.bare", "call.bare"])
async def test_a_retransmitted_invite_does_not_run_the_route_again(
    mode: str, tmp_path: Path, autojump_clock: object
) -> None:
    journal = Journal()
    routes = pending_op_routes(journal)
    with trio.fail_after(300):
        async with open_harness(routes, tmp_path, fr_timeout=30.0, resources=False) as harness:
            caller = harness.caller
            before = Resources.now()
            call = await caller.invite(f"sleep.{mode}")
            for trying in (1, 2, 3):
                await caller.wait_for(partial(_tryings_are, call, trying))
                await trio.sleep(5)
                if trying < 3:
                    await caller.send(call.build("INVITE"))  # RFC 3261 §17.1.1.2: Timer A
            # The op is still pending (60 s): the route ran once, and the 100 came thrice.
            assert journal.kinds(call.call_id) == ["request"]
            assert caller.calls[call.call_id].statuses() == [100, 100, 100]
            await caller.final_response(call)
            await assert_nothing_left(harness, before, processes=[], cancelled_rests=0)

    # The op ended at the fr timer (30 s), never because a retransmission restarted it.
    final = call.final()
    assert final is not None
    assert final.at == pytest.approx(call.sent_at + 30.0)
    assert final.response.status == 408
    assert journal.kinds(call.call_id) == ["request"]


def _tryings_are(call: Call, n: int) -> bool:
    return call.statuses() == [100] * n
