"""``req.launch()``: work that outlives its transaction, reported to a report route, bounded
by ``max_launched``, and cancelled (leaving nothing behind) when the proxy shuts down.

The SIP side (raw UDP peers, a proxy on 127.0.0.1) is the one of test_api.py. Launched ops
here are real: sqlite queries, a program, a plain function in a thread, or an op of the
test's own that waits for the test to release it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import pytest
import trio

from tests.support.ops import LONG_QUERY
from tests.support.script_api import ask, send_request, start_proxy
from triosip.ops import open_database
from triosip.script import ScriptEnvironment
from triosip.script.api import (
    Op,
    OpFailed,
    ReportContext,
    RequestContext,
    Routes,
    ScriptError,
    exec_,
    sleep,
)
from triosip.sip import Response
from triosip.testing.leaks import child_pids, triosip_threads
from triosip.testing.proxy import open_udp_peer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("nothing_left_behind")


@pytest.fixture
async def environment(tmp_path: Path) -> AsyncIterator[ScriptEnvironment]:
    async with open_database(f"sqlite:///{tmp_path / 'launch.db'}") as db:
        yield ScriptEnvironment(db=db, max_launched=2)


def released_op(release: trio.Event, result: Any) -> Op[Any]:
    """An op of the test's own (as a script may write one): it ends when released."""

    async def wait() -> Any:
        await release.wait()
        return result

    return Op("test", "wait for the test", wait)


async def wait_until(condition: Any) -> None:
    """Poll for what threads and processes do (callers bound it with fail_after)."""
    while not condition():  # noqa: ASYNC110 - no trio event tells about another thread
        await trio.sleep(0.005)


async def test_report_runs_after_the_transaction_with_result_and_vars_copy(
    environment: ScriptEnvironment,
) -> None:
    routes = Routes()
    release = trio.Event()
    reports: list[dict[str, Any]] = []
    transaction_vars: list[dict[str, Any]] = []

    @routes.request
    async def main(req: RequestContext) -> None:
        req.vars["caller"] = req.from_user
        transaction_vars.append(req.vars)
        req.launch(released_op(release, {"cdr": 1}), report=write_cdr)
        req.vars["after launch"] = True  # not in the report's copy
        await req.reply(202, "Accepted")

    @routes.report
    async def write_cdr(req: ReportContext) -> None:
        reports.append(
            {
                "result": req.result,
                "error": req.error,
                "vars": req.vars,
                "live": dict(proxy.live),
                "launched": environment.launched,
            }
        )

    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            proxy, address = await start_proxy(nursery, routes, environment)
            response = await ask(address, caller)
            await wait_until(lambda: not proxy.live)  # the transaction is over
            assert reports == []
            release.set()
            await wait_until(lambda: reports)
            await wait_until(lambda: environment.launched == 0)
            nursery.cancel_scope.cancel()

    assert response.status == 202
    [report] = reports
    assert report["result"] == {"cdr": 1}
    assert report["error"] is None
    assert report["vars"] == {"caller": "alice"}  # as they were at launch()
    assert report["vars"] is not transaction_vars[0]
    assert report["live"] == {}
    assert report["launched"] == 1  # the report route is part of the launched work


async def test_report_sees_the_error_and_no_report_logs_it(
    environment: ScriptEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    routes = Routes()
    errors: list[Any] = []

    @routes.request
    async def main(req: RequestContext) -> None:
        req.launch(req.db.query("SELECT * FROM missing_cdrs"), report=reported)
        req.launch(req.db.query("SELECT * FROM missing_too"))  # no report route
        await req.reply(202)

    @routes.report
    async def reported(req: ReportContext) -> None:
        errors.append((req.result, req.error))

    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            _, address = await start_proxy(nursery, routes, environment)
            response = await ask(address, caller)
            await wait_until(lambda: environment.launched == 0)
            nursery.cancel_scope.cancel()

    assert response.status == 202
    [(result, error)] = errors
    assert result is None
    assert isinstance(error, OpFailed)
    assert error.reason == "no such table: missing_cdrs"
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "missing_too" in warning.getMessage()
    assert "no such table" in warning.getMessage()


async def test_launch_beyond_max_launched_raises_script_error(
    environment: ScriptEnvironment,
) -> None:
    routes = Routes()
    release = trio.Event()
    reported: list[Any] = []

    @routes.request
    async def main(req: RequestContext) -> None:
        launched = 0
        for number in range(3):
            try:
                req.launch(released_op(release, number), report=report)
            except ScriptError as exc:
                await req.reply(503, f"launched {launched}; {exc}")
                return
            launched += 1
        await req.reply(202, f"launched {launched}")

    @routes.report
    async def report(req: ReportContext) -> None:
        reported.append(req.result)

    assert environment.max_launched == 2
    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            _, address = await start_proxy(nursery, routes, environment)
            first = await ask(address, caller)
            full = await ask(address, caller)  # the first two still run
            release.set()
            await wait_until(lambda: environment.launched == 0)
            release = trio.Event()
            again = await ask(address, caller)  # their slots are free again
            release.set()
            await wait_until(lambda: environment.launched == 0)
            nursery.cancel_scope.cancel()

    refused = "launched {}; launch() refused: 2 launched ops run already"
    assert (first.status, first.reason) == (503, refused.format(2))
    assert (full.status, full.reason) == (503, refused.format(0))
    assert (again.status, again.reason) == (503, refused.format(2))
    assert sorted(reported) == [0, 0, 1, 1]


class NotServing(ScriptEnvironment):
    """An environment whose launch nursery never opens: its ``serve()`` only reports."""

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


async def test_launch_needs_a_running_environment(environment: ScriptEnvironment) -> None:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        try:
            req.launch(sleep(0))
        except ScriptError as exc:
            await req.reply(500, str(exc))

    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            _, address = await start_proxy(nursery, routes, NotServing(db=environment.db))
            response = await ask(address, caller)
            nursery.cancel_scope.cancel()

    assert (response.status, response.reason) == (500, "launch() needs a running proxy")


async def test_launched_work_outlives_a_cancel(environment: ScriptEnvironment) -> None:
    routes = Routes()
    release = trio.Event()
    in_route = trio.Event()
    reports: list[Any] = []

    @routes.request
    async def main(req: RequestContext) -> None:
        req.launch(released_op(release, "notified"), report=report)
        in_route.set()
        await sleep(30)  # until the CANCEL

    @routes.report
    async def report(req: ReportContext) -> None:
        reports.append(req.result)

    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            proxy, address = await start_proxy(nursery, routes, environment)
            call = await send_request(address, caller, "INVITE")
            await in_route.wait()
            await caller.send(caller.cancel(call.request), address)
            while True:
                message = (await caller.receive()).message
                if (
                    isinstance(message, Response)
                    and message.cseq.method == "INVITE"
                    and message.status >= 200
                ):
                    break
            await caller.send(caller.ack(call.request, message), address)
            await wait_until(lambda: not proxy.live)
            release.set()
            await wait_until(lambda: reports)
            nursery.cancel_scope.cancel()

    assert message.status == 487
    assert reports == ["notified"]


async def test_report_route_that_raises_is_logged(
    environment: ScriptEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        req.launch(sleep(0), report=broken_report)
        await req.reply(202)

    @routes.report
    async def broken_report(req: ReportContext) -> None:
        raise RuntimeError("bug in the report route")

    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            _, address = await start_proxy(nursery, routes, environment)
            first = await ask(address, caller)
            await wait_until(lambda: environment.launched == 0)
            second = await ask(address, caller)  # still serving, still launching
            await wait_until(lambda: environment.launched == 0)
            nursery.cancel_scope.cancel()

    assert (first.status, second.status) == (202, 202)
    records = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(records) == 2
    assert all(
        "report route" in r.getMessage() and "broken_report" in r.getMessage() for r in records
    )
    assert "RuntimeError: bug in the report route" in caplog.text


async def test_launched_work_is_cancelled_at_shutdown_and_leaves_nothing(
    environment: ScriptEnvironment, tmp_path: Path
) -> None:
    routes = Routes()
    reports: list[Any] = []
    pid_file = tmp_path / "program.pid"
    environment.max_launched = 3

    def blocking() -> str:
        time.sleep(0.3)  # a thread can't be stopped: shutdown waits for it
        return "done"

    @routes.request
    async def main(req: RequestContext) -> None:
        req.launch(exec_(f"echo $$ > {pid_file}; exec sleep 30"), report=report)
        req.launch(req.db.query(LONG_QUERY), report=report)
        req.launch(blocking, report=report)
        await req.reply(202)

    @routes.report
    async def report(req: ReportContext) -> None:
        reports.append((req.result, req.error))

    assert environment.db is not None
    db = environment.db
    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            async with trio.open_nursery() as launches:
                _, address = await start_proxy(launches, routes, environment)
                response = await ask(address, caller)
                # All three are under way: a program, a statement, a thread.
                await wait_until(lambda: pid_file.exists() and pid_file.read_text())
                await wait_until(lambda: db.statistics().readers_busy == 1)
                await wait_until(lambda: len(triosip_threads()) == 2)
                started = trio.current_time()
                launches.cancel_scope.cancel()  # the end of a shutdown: environment.serve() too
            took = trio.current_time() - started
            # environment.serve() has returned: nothing it launched is left.
            pid = int(pid_file.read_text())
            left = (environment.launched, child_pids(), triosip_threads())
            statistics = db.statistics()
            nursery.cancel_scope.cancel()

    assert response.status == 202
    assert left == (0, set(), [])
    assert pid not in child_pids()
    assert statistics.queries_cancelled == 1
    assert statistics.readers_busy == 0
    # The program took SIGTERM at once, the statement was interrupted, and only the
    # plain function was waited for (0.3 s at most).
    assert took < 1.0
    assert reports == []  # cancelled work reports nothing
