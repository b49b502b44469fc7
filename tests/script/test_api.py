"""The script API (`triosip.script.api`): its exports, ops in every route type, and relaying
within a dialog.

Each test writes its routes in Python, as a routes file would, runs them in a real `Proxy`
on 127.0.0.1 with a real sqlite file behind ``req.db``, and talks SIP to it over UDP: a raw
socket is the caller, another the callee. Routes report what they saw through the
responses the caller gets, the headers the callee gets, or a list the test reads.

The ops run worker threads (sqlite, plain functions), so these tests run on the real clock:
a thread's progress is invisible to `trio.testing.MockClock`'s autojump.
"""

from __future__ import annotations

import inspect
import logging
import threading
from typing import TYPE_CHECKING, Any

import pytest
import trio

from tests.support.script_api import ask, send_request, start_proxy
from triosip.ops import open_database
from triosip.script import ScriptEnvironment, api
from triosip.script.api import (
    BranchContext,
    FailureContext,
    Op,
    OpFailed,
    OpTimeout,
    ReplyContext,
    ReportContext,
    RequestContext,
    Routes,
    ScriptError,
    sleep,
)
from triosip.sip import Response
from triosip.testing.proxy import open_udp_peer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path


pytestmark = pytest.mark.usefixtures("nothing_left_behind")


@pytest.fixture
async def environment(tmp_path: Path) -> AsyncIterator[ScriptEnvironment]:
    """What ``req.db`` reaches: a real sqlite file (queries as ``SELECT 'x' AS v``)."""
    async with open_database(f"sqlite:///{tmp_path / 'script.db'}") as db:
        yield ScriptEnvironment(db=db, max_launched=10)


def value(
    context: RequestContext | ReplyContext | BranchContext | ReportContext, text: str
) -> Op[list[dict[str, Any]]]:
    """A real db op whose rows say `text`."""
    return context.db.query("SELECT ? AS v", [text])


# -- the exports --------------------------------------------------------------------------


def test_the_api_exports_exactly_these_names() -> None:
    # Routes files import only from here (tests/routes/test_route_imports.py): a name
    # added or dropped changes what every routes file may use. Change this list on purpose.
    assert api.__all__ == [
        "BranchContext",
        "Database",
        "ErrorContext",
        "ExecResult",
        "FailureContext",
        "Op",
        "OpError",
        "OpFailed",
        "OpTimeout",
        "ParseError",
        "ReplyContext",
        "ReportContext",
        "Request",
        "RequestContext",
        "Response",
        "RestClient",
        "RestResponse",
        "Routes",
        "ScriptError",
        "exec_",
        "in_thread",
        "sleep",
    ]
    assert all(getattr(api, name, None) is not None for name in api.__all__)


# -- async_ and plain await in every route type -------------------------------------------


async def test_request_route_awaits_and_resumes(environment: ScriptEnvironment) -> None:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        [row] = await value(req, "awaited")  # plain await
        called = await req.call(lambda: "called", timeout=2.0)  # a plain function
        gathered = await req.gather(value(req, "g1"), sleep(0), timeout=2.0)
        req.vars["seen"] = [row["v"], called, gathered[0][0]["v"], gathered[1]]
        req.async_(value(req, "resumed"), resume=resumed, timeout=2.0)

    @routes.resume
    async def resumed(req: RequestContext) -> None:
        assert req.error is None
        await req.reply(200, " ".join(map(str, [*req.vars["seen"], req.result[0]["v"]])))

    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            _, proxy = await start_proxy(nursery, routes, environment)
            response = await ask(proxy, caller)
            nursery.cancel_scope.cancel()

    assert (response.status, response.reason) == (200, "awaited called g1 None resumed")


async def test_failure_route_awaits_and_resumes(environment: ScriptEnvironment) -> None:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        req.on_failure(failed)
        await req.relay(req.params["callee"])

    @routes.failure
    async def failed(req: FailureContext) -> None:
        [row] = await value(req, f"awaited-after-{req.status}")
        req.vars["awaited"] = row["v"]
        req.async_(value(req, "resumed"), resume=failure_resumed)

    @routes.resume
    async def failure_resumed(req: FailureContext) -> None:
        # Still the failure route's view: the best failure response is there.
        await req.reply(480, f"{req.vars['awaited']} {req.result[0]['v']} {req.status}")

    with trio.fail_after(5):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            routes.params = {"callee": callee.destination}
            _, proxy = await start_proxy(nursery, routes, environment)
            call = await send_request(proxy, caller, "INVITE")
            await callee.answer(486)
            response = await call.final_response()
            nursery.cancel_scope.cancel()

    assert (response.status, response.reason) == (480, "awaited-after-486 resumed 486")


async def test_onreply_route_awaits_and_resumes(environment: ScriptEnvironment) -> None:
    routes = Routes()
    seen: list[tuple[int, str, str]] = []

    @routes.request
    async def main(req: RequestContext) -> None:
        req.on_reply(replied)
        await req.relay(req.params["callee"])

    @routes.onreply
    async def replied(req: ReplyContext) -> None:
        [row] = await value(req, f"awaited-{req.status}")
        req.vars[f"awaited {req.status}"] = row["v"]
        req.async_(value(req, f"resumed-{req.status}"), resume=reply_resumed)

    @routes.resume
    async def reply_resumed(req: ReplyContext) -> None:
        seen.append((req.status, req.vars[f"awaited {req.status}"], req.result[0]["v"]))

    with trio.fail_after(5):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            routes.params = {"callee": callee.destination}
            _, proxy = await start_proxy(nursery, routes, environment)
            call = await send_request(proxy, caller, "INVITE")
            await callee.answer(180, 486)
            response = await call.final_response()
            nursery.cancel_scope.cancel()

    assert seen == [(180, "awaited-180", "resumed-180"), (486, "awaited-486", "resumed-486")]
    # The resume route ran before the response went on: the 180 was relayed after it.
    assert [m.status for m in caller.messages if isinstance(m, Response)][-2:] == [180, 486]
    assert response.status == 486


async def test_onreply_resume_route_can_drop_the_reply(environment: ScriptEnvironment) -> None:
    # The resume route runs "with the same context" (api.async_): what it decides about the
    # response it resumes for must count, as it would in the onreply route itself.
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        req.on_reply(replied)
        await req.relay(req.params["callee"])

    @routes.onreply
    async def replied(req: ReplyContext) -> None:
        req.async_(sleep(0), resume=drop_ringing)

    @routes.resume
    async def drop_ringing(req: ReplyContext) -> None:
        if req.status == 180:
            req.drop()

    with trio.fail_after(5):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            routes.params = {"callee": callee.destination}
            _, proxy = await start_proxy(nursery, routes, environment)
            call = await send_request(proxy, caller, "INVITE")
            await callee.answer(180, 486)
            response = await call.final_response()
            nursery.cancel_scope.cancel()

    assert response.status == 486
    assert 180 not in [m.status for m in caller.messages if isinstance(m, Response)]


async def test_branch_route_awaits_and_resumes(environment: ScriptEnvironment) -> None:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        req.on_branch(branched)
        await req.relay(req.params["callee"])

    @routes.branch
    async def branched(req: BranchContext) -> None:
        [row] = await value(req, f"awaited-{req.branch_index}")
        req.add_header("X-Awaited", row["v"])
        req.async_(value(req, "resumed"), resume=branch_resumed)

    @routes.resume
    async def branch_resumed(req: BranchContext) -> None:
        # Edits in the resume route go into the branch's request, before it is sent.
        req.add_header("X-Resumed", req.result[0]["v"])

    with trio.fail_after(5):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            routes.params = {"callee": callee.destination}
            _, proxy = await start_proxy(nursery, routes, environment)
            call = await send_request(proxy, caller)
            request = await callee.answer(200)
            response = await call.final_response()
            nursery.cancel_scope.cancel()

    assert request.header("x-awaited") == "awaited-0"
    assert request.header("x-resumed") == "resumed"
    assert response.status == 200


async def test_resume_route_starts_another_async(environment: ScriptEnvironment) -> None:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        req.async_(value(req, "first"), resume=first)

    @routes.resume
    async def first(req: RequestContext) -> None:
        [row] = await value(req, "awaited")  # plain await in a resume route
        req.vars["chain"] = [req.result[0]["v"], row["v"]]
        req.async_(value(req, "second"), resume=second)

    @routes.resume
    async def second(req: RequestContext) -> None:
        await req.reply(200, " ".join([*req.vars["chain"], req.result[0]["v"]]))

    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            _, proxy = await start_proxy(nursery, routes, environment)
            response = await ask(proxy, caller)
            nursery.cancel_scope.cancel()

    assert (response.status, response.reason) == (200, "first awaited second")


async def test_report_route_awaits_and_resumes(environment: ScriptEnvironment) -> None:
    routes = Routes()
    seen: list[str] = []
    done = trio.Event()

    @routes.request
    async def main(req: RequestContext) -> None:
        req.launch(value(req, "launched"), report=reported)
        await req.reply(202, "Launched")

    @routes.report
    async def reported(req: ReportContext) -> None:
        [row] = await value(req, "awaited")
        seen.extend([req.result[0]["v"], row["v"]])
        req.async_(value(req, "resumed"), resume=report_resumed)

    @routes.resume
    async def report_resumed(req: ReportContext) -> None:
        seen.append(req.result[0]["v"])
        done.set()

    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            _, proxy = await start_proxy(nursery, routes, environment)
            response = await ask(proxy, caller)
            await done.wait()
            nursery.cancel_scope.cancel()

    assert response.status == 202
    assert seen == ["launched", "awaited", "resumed"]


# -- what a resume route sees --------------------------------------------------------------


async def test_vars_survive_into_resume_and_later_routes(environment: ScriptEnvironment) -> None:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        req.vars["before"] = 1
        req.async_(sleep(0), resume=resumed)
        req.vars["after"] = 2  # still the request route: the op has not ended yet

    @routes.resume
    async def resumed(req: RequestContext) -> None:
        req.vars["resumed"] = dict(req.vars)
        req.on_failure(failed)
        await req.relay(req.params["callee"])

    @routes.failure
    async def failed(req: FailureContext) -> None:
        await req.reply(480, repr(sorted(req.vars["resumed"].items())) + f" {len(req.vars)}")

    with trio.fail_after(5):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            routes.params = {"callee": callee.destination}
            _, proxy = await start_proxy(nursery, routes, environment)
            call = await send_request(proxy, caller)
            await callee.answer(503)
            response = await call.final_response()
            nursery.cancel_scope.cancel()

    assert (response.status, response.reason) == (480, "[('after', 2), ('before', 1)] 3")


async def test_plain_function_runs_in_a_thread_and_resumes(
    environment: ScriptEnvironment,
) -> None:
    routes = Routes()
    threads: list[tuple[threading.Thread, str]] = []

    def lookup() -> str:
        thread = threading.current_thread()
        threads.append((thread, thread.name))  # trio renames the thread once idle
        return "from a thread"

    def broken() -> str:
        raise ValueError("no such subscriber")

    @routes.request
    async def main(req: RequestContext) -> None:
        function = broken if req.header("x-break") else lookup
        req.async_(function, resume=resumed)

    @routes.resume
    async def resumed(req: RequestContext) -> None:
        if req.error is None:
            await req.reply(200, req.result)
            return
        assert req.result is None
        assert isinstance(req.error, OpFailed)
        assert isinstance(req.error.__cause__, ValueError)
        await req.reply(500, f"{req.error.kind}: {req.error.reason}")

    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            _, proxy = await start_proxy(nursery, routes, environment)
            good = await ask(proxy, caller)
            call = await send_request(proxy, caller, headers=[("X-Break", "yes")])
            bad = await call.final_response()
            nursery.cancel_scope.cancel()

    assert (good.status, good.reason) == (200, "from a thread")
    [(thread, name)] = threads
    assert thread is not threading.main_thread()
    assert name == "triosip thread test_plain_function_runs_in_a_thread_and_resumes.<locals>.lookup"
    assert (bad.status, bad.reason) == (500, "thread: ValueError: no such subscriber")


async def test_async_with_a_list_resumes_with_a_list(environment: ScriptEnvironment) -> None:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        ops: list[Op[Any] | Callable[[], Any]]
        if req.header("x-break"):
            ops = [value(req, "a"), req.db.query("SELECT * FROM missing"), sleep(10)]
        else:
            ops = [value(req, "a"), lambda: "b", sleep(0)]
        req.async_(ops, resume=resumed)

    @routes.resume
    async def resumed(req: RequestContext) -> None:
        if req.error is not None:
            assert req.result is None
            await req.reply(500, f"{type(req.error).__name__} {req.error.reason}")
            return
        rows, text, nothing = req.result
        await req.reply(200, f"{rows[0]['v']} {text} {nothing}")

    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            _, proxy = await start_proxy(nursery, routes, environment)
            good = await ask(proxy, caller)
            started = trio.current_time()
            call = await send_request(proxy, caller, headers=[("X-Break", "yes")])
            bad = await call.final_response()
            took = trio.current_time() - started
            nursery.cancel_scope.cancel()

    assert (good.status, good.reason) == (200, "a b None")
    # The failed query ended the list at once: the 10 s sleep was cancelled.
    assert (bad.status, bad.reason) == (500, "OpFailed no such table: missing")
    assert took < 2


async def test_async_timeout_resumes_with_op_timeout(environment: ScriptEnvironment) -> None:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        req.async_(sleep(10), resume=resumed, timeout=0.05)

    @routes.resume
    async def resumed(req: RequestContext) -> None:
        assert isinstance(req.error, OpTimeout)
        await req.reply(503, f"{req.error.timeout:g} {req.result}")

    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            _, proxy = await start_proxy(nursery, routes, environment)
            response = await ask(proxy, caller)
            nursery.cancel_scope.cancel()

    assert (response.status, response.reason) == (503, "0.05 None")


async def _coroutine_function() -> str:
    return "never"


async def test_async_with_a_non_op_raises_at_once(environment: ScriptEnvironment) -> None:
    routes = Routes()
    resumed_with: list[Any] = []

    @routes.request
    async def main(req: RequestContext) -> None:
        coroutine = _coroutine_function()  # the classic slip: called, not awaited
        errors = []
        for work in [42, "SELECT 1", coroutine, [], [sleep(0), None]]:
            try:
                req.async_(work, resume=resumed)  # type: ignore[arg-type]
            except ScriptError as exc:
                errors.append(type(work).__name__)
                req.log.info("refused: %s", exc)
        coroutine.close()
        await req.reply(200, " ".join(errors))

    @routes.resume
    async def resumed(req: RequestContext) -> None:
        resumed_with.append(req.result)

    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            _, proxy = await start_proxy(nursery, routes, environment)
            response = await ask(proxy, caller)
            nursery.cancel_scope.cancel()

    assert (response.status, response.reason) == (200, "int str coroutine list list")
    assert resumed_with == []


async def test_async_with_an_async_function_raises_at_once(
    environment: ScriptEnvironment,
) -> None:
    # An async function is callable, but it is no plain blocking function: run in a
    # thread it would only make a coroutine that nobody awaits. It must be refused like
    # any other non-op, at the call, not resume with a coroutine object as its result.
    routes = Routes()
    resumed_with: list[Any] = []

    @routes.request
    async def main(req: RequestContext) -> None:
        try:
            req.async_(_coroutine_function, resume=resumed)
        except ScriptError as exc:
            await req.reply(500, f"refused: {exc}"[:100])
            return
        await req.reply(200, "accepted")

    @routes.resume
    async def resumed(req: RequestContext) -> None:
        resumed_with.append(req.result)
        if hasattr(req.result, "close"):
            req.result.close()  # keep the unawaited coroutine from warning at exit

    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            _, proxy = await start_proxy(nursery, routes, environment)
            response = await ask(proxy, caller)
            nursery.cancel_scope.cancel()

    assert response.status == 500, resumed_with
    assert response.reason.startswith("refused: ")
    assert resumed_with == []


async def test_resume_route_that_raises_gets_500_and_the_proxy_serves_on(
    environment: ScriptEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        if req.header("x-break"):
            req.async_(sleep(0), resume=broken_resume)
        else:
            await req.reply(200, "Still Here")

    @routes.resume
    async def broken_resume(req: RequestContext) -> None:
        raise RuntimeError("bug in the resume route")

    broken_resume_line = inspect.getsourcelines(broken_resume)[1] + 2

    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            _, proxy = await start_proxy(nursery, routes, environment)
            call = await send_request(proxy, caller, headers=[("X-Break", "yes")])
            broken = await call.final_response()
            after = await ask(proxy, caller)
            nursery.cancel_scope.cancel()

    assert broken.status == 500
    assert (after.status, after.reason) == (200, "Still Here")
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    # One line: the resume route, its exception, its file and line (the traceback is at
    # DEBUG).
    assert call.call_id in record.getMessage()
    assert record.exc_info is None
    assert "route broken_resume raised RuntimeError: bug in the resume route at " in (
        record.getMessage()
    )
    assert record.getMessage().endswith(f"{__file__}:{broken_resume_line}")


# -- relaying within a dialog -------------------------------------------------------------


@pytest.mark.parametrize("path", ["route-set", "fallback", "request-uri"])
async def test_relay_in_dialog_follows_the_route_set_else_the_fallback_else_the_uri(
    environment: ScriptEnvironment, path: str
) -> None:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        relayed = await req.relay_in_dialog(req.params.get("fallback"))
        req.vars["relayed"] = relayed

    with trio.fail_after(5):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            open_udp_peer() as decoy,
            trio.open_nursery() as nursery,
        ):
            routes.params = {"fallback": decoy.destination}
            _, proxy = await start_proxy(nursery, routes, environment)
            myself = f"sip:bob@{proxy.host_port}"
            if path == "route-set":
                # Our own Route entry goes; the next one is where the BYE goes.
                uri = f"sip:bob@{decoy.address.host_port}"
                route_set = f"<sip:{proxy.host_port};lr>, <sip:{callee.address.host_port};lr>"
                headers = [("Route", route_set)]
            elif path == "fallback":
                # No Route and a Request-URI naming us: a UA that ignored Record-Route.
                routes.params = {"fallback": callee.destination}
                uri, headers = myself, []
            else:
                uri, headers = f"sip:bob@{callee.address.host_port}", []
            bye = caller.request("BYE", uri, to_tag="callee", headers=headers)
            await caller.send(bye, proxy)
            relayed = await callee.answer(200)
            response = await caller.receive_response()
            nursery.cancel_scope.cancel()

    assert (relayed.method, relayed.call_id) == ("BYE", bye.call_id)
    # Our entry is gone; the callee's stays, for it to remove (RFC 3261 §16.4).
    expected_route = f"<sip:{callee.address.host_port};lr>" if path == "route-set" else None
    assert relayed.header("route") == expected_route
    assert response.status == 200
    assert decoy.received == []


async def test_a_request_to_this_proxy_with_no_way_forward_is_refused_not_looped(
    environment: ScriptEnvironment, caplog: pytest.LogCaptureFixture
) -> None:
    # A BYE and an ACK with no Route whose Request-URI names the proxy, and no fallback;
    # a new MESSAGE to the proxy itself, relayed with no destination. This used to send
    # each of them to the proxy itself: the BYE and the MESSAGE came back as loops and got
    # 482 Loop Detected; the ACK went round until its Max-Forwards ran out.
    caplog.set_level(logging.INFO)
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        if req.has_to_tag:
            await req.relay_in_dialog()
            return
        if not await req.relay():
            await req.reply(404, "Nowhere To Send It")

    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            server, proxy = await start_proxy(nursery, routes, environment)
            myself = f"sip:bob@{proxy.host_port}"
            ack = caller.request("ACK", myself, to_tag="callee")
            await caller.send(ack, proxy)
            bye = caller.request("BYE", myself, to_tag="callee")
            await caller.send(bye, proxy)
            bye_response = await caller.receive_response()
            message = caller.request("MESSAGE", myself)
            await caller.send(message, proxy)
            message_response = await caller.receive_response()
            statistics = server.statistics()
            nursery.cancel_scope.cancel()

    # Kamailio's and OpenSIPS's sample configs answer such a BYE 404 "Not here".
    assert (bye_response.status, bye_response.reason) == (404, "Not Here")
    assert (message_response.status, message_response.reason) == (404, "Nowhere To Send It")
    assert statistics.requests_forwarded == {}
    assert statistics.requests_received == {"ACK": 1, "BYE": 1, "MESSAGE": 1}
    # One line each, naming the request and why.
    for request in (ack, bye, message):
        [line] = [m for m in caplog.messages if request.call_id in m and "names this proxy" in m]
        assert request.method in line


@pytest.mark.parametrize("spelling", ["udp:{host}:{port}", "sip:{host}:{port}", "{host}:{port}"])
async def test_relay_to_an_address_of_this_proxy_is_refused_not_looped(
    environment: ScriptEnvironment, caplog: pytest.LogCaptureFixture, spelling: str
) -> None:
    # A destination that names the proxy's own listener (a --define pointing at
    # ourselves). This used to send the request to the proxy itself: it came back as a
    # loop, and was answered 482 Loop Detected.
    caplog.set_level(logging.INFO)
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        if not await req.relay(req.params["downstream"]):
            await req.reply(503, "Not To Myself")

    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            server, proxy = await start_proxy(nursery, routes, environment)
            routes.params = {"downstream": spelling.format(host=proxy.host, port=proxy.port)}
            message = caller.request("MESSAGE", "sip:bob@example.org")
            await caller.send(message, proxy)
            response = await caller.receive_response()
            statistics = server.statistics()
            nursery.cancel_scope.cancel()

    assert (response.status, response.reason) == (503, "Not To Myself")
    assert statistics.requests_forwarded == {}
    [line] = [m for m in caplog.messages if message.call_id in m and "this proxy" in m]
    assert "MESSAGE" in line


async def test_relay_in_dialog_of_a_request_without_to_tag_is_a_script_error(
    environment: ScriptEnvironment,
) -> None:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        try:
            await req.relay_in_dialog()
        except ScriptError as exc:
            await req.reply(500, str(exc)[:60])

    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            _, proxy = await start_proxy(nursery, routes, environment)
            response = await ask(proxy, caller, "INVITE")
            nursery.cancel_scope.cancel()

    assert response.status == 500
    assert "To tag" in response.reason
