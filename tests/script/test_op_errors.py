"""Promise 3 of docs/cancellation.md: an op that fails or passes its own timeout resumes the
route with that error visible (``.error`` set, ``.result`` None), never with a silent None;
awaited (plain ``await``, ``req.call``, ``req.gather``), it is raised as an `OpError`. And
with several ops at once, the first failure cancels the others (their processes, threads,
connections and queries gone) before the route sees it.

Real resources, real clock: a sqlite file, a local HTTP server, processes and threads.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import pytest
import trio

from tests.support.ops import LONG_QUERY, wait_until
from tests.support.script import (
    SETTLE,
    THREAD_SECONDS,
    Harness,
    Journal,
    assert_nothing_left,
    blocking_work,
    open_harness,
    ops_started,
    pending_op,
    still_running,
)
from triosip.script.api import (
    FailureContext,
    Op,
    OpError,
    OpFailed,
    OpTimeout,
    RequestContext,
    Routes,
    exec_,
    in_thread,
    sleep,
)
from triosip.testing.leaks import Resources

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from triosip.script._runner import OpLike

pytestmark = pytest.mark.usefixtures("nothing_left_behind")

# The ops' own timeout, and how late after it (or after a failure) the answer may come.
OP_TIMEOUT = 0.05
SLACK = 0.3


def _raise_value_error() -> None:
    raise ValueError("no such subscriber")


def failing_op(req: RequestContext, case: str) -> OpLike:
    """The op of `case` (see `EXPECTED`)."""
    if case == "bad-sql":
        return req.db.query("SELEKT setid FROM subscribers")
    if case == "refused":
        return req.rest.get(f"http://127.0.0.1:{req.params['refused']}/")
    if case == "missing-program":
        return exec_(["/no/such/program"])
    if case == "thread-raises":
        return _raise_value_error
    if case == "db-timeout":
        return req.db.query(LONG_QUERY)
    if case == "rest-timeout":
        return req.rest.get(f"{req.params['http']}/hang")
    if case == "exec-timeout":
        return exec_(["sleep", "60"])
    if case == "sleep-timeout":
        return sleep(60)
    if case == "thread-timeout":
        return blocking_work
    raise AssertionError(case)


# What each case's op must end with: the error's type, its kind, words of its message.
EXPECTED: dict[str, tuple[type[OpError], str, str]] = {
    "bad-sql": (OpFailed, "db", "syntax error"),
    "refused": (OpFailed, "rest", "ConnectError"),
    "missing-program": (OpFailed, "exec", "can't run '/no/such/program': No such file"),
    "thread-raises": (OpFailed, "thread", "ValueError: no such subscriber"),
    "db-timeout": (OpTimeout, "db", "timed out after 0.05 s"),
    "rest-timeout": (OpTimeout, "rest", "timed out after 0.05 s"),
    "exec-timeout": (OpTimeout, "exec", "timed out after 0.05 s"),
    "sleep-timeout": (OpTimeout, "sleep", "timed out after 0.05 s"),
    "thread-timeout": (OpTimeout, "thread", "timed out after 0.05 s"),
}

FAILURES = ["bad-sql", "refused", "missing-program", "thread-raises"]
TIMEOUTS = ["db-timeout", "rest-timeout", "exec-timeout", "sleep-timeout", "thread-timeout"]


def error_routes(journal: Journal) -> Routes:
    """Users ``<case>.<mode>``: the op of `case` run by ``async_`` (with the op timeout),
    ``req.call`` (with it too) or plain ``await`` (no timeout of its own). The route that
    sees the error answers ``404 <ErrorType> <kind>``."""
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        if req.is_stateless:
            return  # an ACK that came after its transaction ended (a retransmitted final's)
        assert req.ruri_user is not None
        case, mode = req.ruri_user.split(".")
        journal.add(req.call_id, "request")
        req.on_failure(failed)
        op = failing_op(req, case)
        timeout = OP_TIMEOUT if case.endswith("timeout") else None
        if mode == "async":
            req.async_(op, resume=resumed, timeout=timeout)
            return
        try:
            if mode == "call":
                result = await req.call(op, timeout=timeout)
            else:  # a plain function can't be awaited: in_thread() makes it an op
                result = await (op if isinstance(op, Op) else in_thread(op))
        except OpError as exc:
            journal.add(req.call_id, "raised", exc)
            await req.reply(404, f"{type(exc).__name__} {exc.kind}")
            return
        journal.add(req.call_id, "after await", result)
        await req.reply(500, "No Error")

    @routes.resume
    async def resumed(req: RequestContext) -> None:
        journal.add(req.call_id, "resume", (req.result, req.error))
        if req.error is None:
            await req.reply(500, "No Error")
        else:
            await req.reply(404, f"{type(req.error).__name__} {req.error.kind}")

    @routes.failure
    async def failed(req: FailureContext) -> None:
        journal.add(req.call_id, "failure", req.status)

    return routes


@pytest.mark.parametrize("case", FAILURES + TIMEOUTS)
async def test_an_ops_own_error_reaches_the_route(case: str, tmp_path: Path) -> None:
    journal = Journal()
    routes = error_routes(journal)
    modes = ["async", "call"] if case in TIMEOUTS else ["async", "call", "await"]
    with trio.fail_after(5), socket.socket() as refused:
        # Bound, not listening: a connection to it is refused (RST) for the whole test.
        refused.bind(("127.0.0.1", 0))
        async with open_harness(routes, tmp_path, fr_timeout=5.0) as harness:
            assert harness.http is not None
            routes.params = {"http": harness.http.url, "refused": str(refused.getsockname()[1])}
            before = Resources.now()
            calls = [await harness.caller.invite(f"{case}.{mode}") for mode in modes]
            for call in calls:
                await harness.caller.final_response(call)
            await assert_nothing_left(
                harness,
                before,
                processes=[],
                cancelled_rests=len(calls) if case == "rest-timeout" else 0,
            )

    for call in calls:
        mode = call.user.split(".")[1]
        expected_type, kind, words = EXPECTED[case]
        kinds = journal.kinds(call.call_id)
        if mode == "async":
            assert kinds == ["request", "resume"], call.user
            [(result, error)] = journal.of(call.call_id, "resume")
            assert result is None, call.user
        else:
            assert kinds == ["request", "raised"], call.user
            [error] = journal.of(call.call_id, "raised")
        assert type(error) is expected_type, f"{call.user}: {error!r}"
        assert error.kind == kind, call.user
        assert words in str(error), f"{call.user}: {error}"
        final = call.final()
        assert final is not None
        assert (final.response.status, final.response.reason) == (
            404,
            f"{expected_type.__name__} {kind}",
        ), call.user
        took = final.at - call.sent_at
        earliest = THREAD_SECONDS if case == "thread-timeout" else 0.0
        if case in TIMEOUTS:
            earliest = max(earliest, OP_TIMEOUT)
        assert earliest <= took < earliest + SLACK, f"{call.user}: answered after {took:.3f} s"


# -- several ops at once ------------------------------------------------------------------

# The ops that a failing sibling must cancel (each runs a minute unless cancelled).
SIBLINGS = ["db", "rest", "exec", "exec-shell", "thread", "sleep"]


def parallel_routes(journal: Journal, probe: dict[str, Callable[[], Any]]) -> Routes:
    """Users ``<kind>.<mode>``: a long op of `kind` and an op that fails once the first is
    running, by ``async_([...])`` (mode ``async``) or ``req.gather`` (``gather``); mode
    ``all-slow`` gathers two long ops under an op timeout. Where the error is seen, the
    journal records it with how many ops of `kind` still ran (``probe['running']()``)."""
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        if req.is_stateless:
            return  # an ACK that came after its transaction ended (a retransmitted final's)
        assert req.ruri_user is not None
        kind, mode = req.ruri_user.split(".")
        journal.add(req.call_id, "request")

        async def fail_once_the_other_runs() -> None:
            await wait_until(probe["started"])
            await trio.sleep(SETTLE)
            raise OpFailed("check", "fails once the other op runs", "the check failed")

        ops = [pending_op(req, kind), Op("check", "fails", fail_once_the_other_runs)]
        timeout = None
        if mode == "all-slow":
            ops[1], timeout = sleep(60), 0.05
        if mode == "async":
            req.async_(ops, resume=resumed, timeout=timeout)
            return
        try:
            result = await req.gather(*ops, timeout=timeout)
        except OpError as exc:
            journal.add(req.call_id, "raised", (exc, probe["running"]()))
            await req.reply(404, type(exc).__name__)
            return
        journal.add(req.call_id, "after await", result)
        await req.reply(500, "No Error")

    @routes.resume
    async def resumed(req: RequestContext) -> None:
        journal.add(req.call_id, "resume", (req.result, req.error, probe["running"]()))
        await req.reply(404, type(req.error).__name__)

    return routes


@pytest.mark.parametrize(
    ("kind", "mode"),
    [
        (kind, mode)
        for kind in SIBLINGS
        for mode in ("async", "gather", "all-slow")
        # A thread is only waited for, under a timeout as under a failure: once is enough.
        if (kind, mode) != ("thread", "all-slow")
    ],
)
async def test_a_failing_op_cancels_its_siblings(kind: str, mode: str, tmp_path: Path) -> None:
    journal = Journal()
    probe: dict[str, Callable[[], Any]] = {}
    routes = parallel_routes(journal, probe)
    with trio.fail_after(5):
        async with open_harness(routes, tmp_path, fr_timeout=5.0) as harness:
            assert harness.http is not None
            routes.params = {"http": harness.http.url, "dir": str(tmp_path)}
            before = Resources.now()
            calls: list[Any] = []
            probe["started"] = lambda: ops_started(harness, kind, calls, before)
            probe["running"] = lambda: still_running(harness, kind, before)
            calls.append(await harness.caller.invite(f"{kind}.{mode}"))
            await harness.caller.final_response(calls[0])
            await assert_nothing_left(
                harness,
                before,
                processes=_processes(harness),
                cancelled_rests=1 if kind == "rest" else 0,
            )

    [call] = calls
    if mode == "async":
        assert journal.kinds(call.call_id) == ["request", "resume"]
        [(result, error, running)] = journal.of(call.call_id, "resume")
        assert result is None
    else:
        mode_kinds = journal.kinds(call.call_id)
        assert mode_kinds == ["request", "raised"], mode_kinds
        [(error, running)] = journal.of(call.call_id, "raised")
    if mode == "all-slow":
        assert type(error) is OpTimeout, error
        assert (error.kind, error.timeout) == ("ops", 0.05)
    else:
        assert type(error) is OpFailed, error
        assert (error.kind, error.reason) == ("check", "the check failed")
    # The sibling was cancelled and cleaned up before the route saw the error.
    assert running == 0, f"{running} {kind} ops still ran when the route saw {error!r}"
    final = call.final()
    assert final is not None
    assert final.response.status == 404
    took = final.at - call.sent_at
    assert took < (THREAD_SECONDS if kind == "thread" else 0.05) + SLACK


def _processes(harness: Harness) -> list[int]:
    return [
        int(pid) for path in harness.tmp_path.glob("*.pids") for pid in path.read_text().split()
    ]
