"""Promise 4 of docs/cancellation.md, in-process (what `triosip.app.Running.shut_down` does on
SIGTERM): `Proxy.shut_down(grace)` stops taking new transactions and lets live ones finish
within the grace period; cancelling the proxy then cancels the rest, every kind of pending
op with them, and nothing of them is left.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest
import trio

from tests.support.ops import wait_until
from tests.support.script import (
    PENDING_KINDS,
    READERS,
    SHORT_SECONDS,
    Journal,
    assert_nothing_left,
    open_harness,
    pending_op_routes,
    pid_file,
    pids_written,
)
from triosip.testing.leaks import Resources, busy_threads, child_pids

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support.script import Call, Harness

pytestmark = pytest.mark.usefixtures("nothing_left_behind")

GRACE = 0.2
SLACK = 0.3
# A thread can't be stopped, only waited for: "thread-held" blocks until the test lets it
# go, so that the test sees the shutdown wait for it. The proxy's database is sqlite here;
# test_postgres.py shuts a proxy down with queries pending on PostgreSQL.
KINDS = (*(k for k in PENDING_KINDS if k not in ("thread", "pg")), "thread-held", "sleep")
MODES = ("async", "await")


def _all_started(harness: Harness, calls: list[Call], before: Resources) -> bool:
    assert harness.db is not None
    assert harness.http is not None
    n = len(MODES)
    threads = busy_threads()
    return (
        harness.db.statistics().readers_busy == min(n, READERS)
        and harness.http.hanging == 2 * n  # rest and rest-half
        and len(child_pids() - before.children) == 2 * n  # exec, and exec-shell's shells
        and all(
            pids_written(pid_file(str(harness.tmp_path), c.call_id))
            for c in calls
            if c.user.startswith("exec-shell.")
        )
        and sum(count for name, count in threads.items() if name.startswith("triosip thread")) == n
    )


async def test_shutdown_waits_for_the_grace_then_cancels_every_pending_op(
    tmp_path: Path,
) -> None:
    journal = Journal()
    held = threading.Event()
    routes = pending_op_routes(journal, held)
    with trio.fail_after(5):
        async with open_harness(routes, tmp_path, fr_timeout=30.0) as harness:
            assert harness.http is not None
            routes.params = {"http": harness.http.url, "dir": str(tmp_path)}
            caller, proxy = harness.caller, harness.proxy
            before = Resources.now()
            pending = [
                await caller.invite(f"{kind}.{mode}.armed") for kind in KINDS for mode in MODES
            ]
            await wait_until(lambda: _all_started(harness, pending, before))
            processes = [
                pid
                for c in pending
                if c.user.startswith("exec-shell.")
                for pid in pids_written(pid_file(str(tmp_path), c.call_id))
            ] + sorted(child_pids() - before.children)
            # This one's op ends within the grace: its resume route answers.
            short = await caller.invite("short.async.armed")
            await wait_until(lambda: journal.kinds(short.call_id) == ["request"])

            async with trio.open_nursery() as nursery:
                grace_from = trio.current_time()
                nursery.start_soon(proxy.shut_down, GRACE)
                await wait_until(lambda: proxy.closing)
                refused = await caller.invite("short.async.bare")
                await caller.final_response(refused)
                await caller.final_response(short)
            grace_took = trio.current_time() - grace_from
            # The last step of a shutdown: cancel what did not finish.
            harness.proxy_scope.cancel()
            with trio.move_on_after(0.1):
                await harness.proxy_stopped.wait()
            # Everything else has stopped by now; the threads still run, and are waited for.
            waiting_for = _running_ops(harness, before)
            released_at = trio.current_time()
            held.set()
            await harness.proxy_stopped.wait()
            stopped_at = trio.current_time()
            await assert_nothing_left(
                harness, before, processes=processes, cancelled_rests=2 * len(MODES)
            )

    assert GRACE <= grace_took < GRACE + SLACK
    assert waiting_for == {"worker threads": len(MODES)}
    assert stopped_at - released_at < SLACK
    refused_final = refused.final()
    assert refused_final is not None
    assert (refused_final.response.status, refused_final.response.reason) == (503, "Shutting Down")
    assert journal.kinds(refused.call_id) == []  # no route ran for it
    short_final = short.final()
    assert short_final is not None
    assert short_final.response.status == 500  # "Resumed": its resume route ran, in time
    assert short_final.at - short.sent_at < SHORT_SECONDS + SLACK
    assert journal.kinds(short.call_id) == ["request", "resume"]
    for call in pending:
        # Cancelled: neither the resume route, nor the code after the await, nor the
        # failure route ran.
        assert journal.kinds(call.call_id) == ["request"], call.user


def _running_ops(harness: Harness, before: Resources) -> dict[str, int]:
    """What of the ops still runs: busy DB readers, REST requests in flight, processes,
    worker threads."""
    assert harness.db is not None
    assert harness.rest is not None
    threads = busy_threads()
    running = {
        "db readers": harness.db.statistics().readers_busy,
        "rest requests": harness.rest.statistics().requests_in_flight,
        "children": len(child_pids() - before.children),
        "worker threads": sum(
            count for name, count in threads.items() if name.startswith("triosip")
        ),
    }
    return {what: n for what, n in running.items() if n}
