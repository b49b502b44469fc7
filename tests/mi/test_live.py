"""The MI of a live proxy, over HTTP: what runs shows in the tree, and leaves it when done.

Each test runs routes in a real `Proxy` on 127.0.0.1 with its MI on a free port, sends
SIP over raw UDP sockets, and reads ``/tasks`` and ``/stats`` as an operator would. The
ops run worker threads (sqlite), so these tests run on the real clock.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import trio

from tests.support.mi import Call, ops_of, run_proxy, walk
from triosip.mi._inspect import sample_some
from triosip.ops import op_accounting, open_database
from triosip.proxy import ProxyTransaction
from triosip.script import ScriptEnvironment
from triosip.script.api import FailureContext, RequestContext, Routes, sleep
from triosip.testing.proxy import open_udp_peer

if TYPE_CHECKING:
    from pathlib import Path

    from triosip.mi import TransactionSample
    from triosip.proxy.inspection import TransactionView

# A query that runs for minutes unless interrupted: it shows as pending, and only a cancel
# that really interrupts sqlite lets the test end.
SLOW_SQL = (
    "SELECT count(*) AS n FROM (WITH RECURSIVE c(x) AS "
    "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000) SELECT x FROM c)"
)


def pending_routes() -> Routes:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        if req.method != "INVITE":
            await req.reply(200)
            return
        req.async_(sleep(30), resume=never, timeout=20)
        req.async_(req.db.query(SLOW_SQL), resume=never, timeout=15)
        req.launch(sleep(30), report=None)

    @routes.resume
    async def never(req: RequestContext) -> None:
        raise AssertionError(f"resumed: {req.error}")

    return routes


async def test_pending_ops_show_under_their_transaction_until_it_is_cancelled(
    tmp_path: Path,
) -> None:
    with trio.fail_after(15):
        async with (
            open_database(f"sqlite:///{tmp_path / 'mi.db'}") as db,
            run_proxy(
                pending_routes(),
                environment=ScriptEnvironment(db=db, max_launched=10),
                fr_timeout=30.0,
                fr_inv_timeout=60.0,
            ) as running,
            open_udp_peer() as caller,
        ):
            call = Call.new(caller, running.sip)
            other = Call.new(caller, running.sip)
            await call.send("INVITE")
            await other.send("INVITE")
            document = await running.wait_for_tasks(
                lambda d: d["summary"]["ops_running"] == 6  # 2 x (sleep, query, launched sleep)
            )
            assert document["summary"] == {
                "transactions": 2,
                "matched": 2,
                "shown": 2,
                "methods": {"INVITE": 2},
                "states": {"Proceeding": 2},
                "ops_running": 6,
                "ops": {"sleep": 4, "db": 2},
                "launched": 2,
            }
            [tx] = (await running.tasks(call_id=call.call_id))["transactions"]
            assert (tx["method"], tx["ruri"], tx["call_id"]) == (
                "INVITE",
                "sip:bob@example.org",
                call.call_id,
            )
            assert tx["name"] == f"IST INVITE {call.branch}"
            assert (tx["branch"], tx["state"], tx["last_status"]) == (
                call.branch,
                "Proceeding",
                100,
            )
            assert 0 <= tx["age"] < 10
            # The request route ran and returned; its two ops run in the route's nursery,
            # each in a task named after it, under the transaction's own task.
            ops = {node["op"]["kind"]: node for node in tx["children"]}
            assert set(ops) == {"sleep", "db"}
            assert ops["sleep"]["op"] == {"kind": "sleep", "description": "sleep 30", "timeout": 20}
            assert ops["db"]["op"] == {"kind": "db", "description": SLOW_SQL, "timeout": 15}
            for node in ops.values():
                # The task's name is the op's (cut at 120 characters, as the runner names it).
                assert f"op {node['op']['kind']} {node['op']['description']}".startswith(
                    node["name"].removesuffix("...")
                )
                assert 0 <= node["age"] <= tx["age"]
                assert 0 < node["deadline_in"] <= node["op"]["timeout"]
            # Which timer fires next, and what it does: the query's own timeout.
            assert tx["next_timer"]["timer"] == "op timeout"
            assert tx["next_timer"]["action"].startswith("db op times out")
            # Launched work runs beyond the transactions, under its own root.
            launched = (await running.tasks())["launched"]
            assert [node["op"]["description"] for node in launched] == ["sleep 30", "sleep 30"]

            terminated = await call.cancel()
            assert terminated.status == 487
            # The cancelled transaction leaves the tree (once its Timer I has passed); the
            # other still shows both its ops.
            document = await running.wait_for_tasks(lambda d: d["summary"]["transactions"] == 1)
            [left] = document["transactions"]
            assert left["call_id"] == other.call_id
            assert {node["op"]["kind"] for node in left["children"]} == {"sleep", "db"}

            await other.cancel()
            document = await running.wait_for_tasks(lambda d: d["summary"]["transactions"] == 0)
            assert document["transactions"] == []
            assert len(document["launched"]) == 2  # a CANCEL does not stop launched work
            stats = await running.stats()

    ops = stats["ops"]
    assert (ops["db"]["started"], ops["db"]["cancelled"], ops["db"]["running"]) == (2, 2, 0)
    assert (ops["sleep"]["started"], ops["sleep"]["cancelled"], ops["sleep"]["running"]) == (
        4,
        2,
        2,
    )
    # Each CANCEL got its 200 and each INVITE its 100 and 487, all from the proxy (RFC 3261
    # §16.10).
    assert stats["proxy"]["replies_generated"] == {"1xx": 2, "2xx": 2, "4xx": 2}
    assert stats["transactions"]["server_active"] == 0


async def test_the_tree_shows_branches_and_empties_when_fr_timeout_fires() -> None:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        req.on_failure(failover)
        if req.header("x-mode") == "relay":
            await req.relay(req.params["callee"])
        else:
            await sleep(30)  # the route waits in the transaction's own task

    @routes.failure
    async def failover(req: FailureContext) -> None:
        await req.reply(480, "Gone Fishing")

    with trio.fail_after(10):
        async with open_udp_peer() as caller, open_udp_peer() as callee:
            routes.params = {"callee": callee.destination}
            async with run_proxy(routes, fr_timeout=0.8, fr_inv_timeout=1.5) as running:
                call = Call.new(caller, running.sip)
                await call.send("INVITE")
                document = await running.wait_for_tasks(lambda d: d["summary"]["ops_running"] == 1)
                [tx] = document["transactions"]
                [node] = tx["children"]
                assert node["name"] == "route awaits"
                assert node["op"] == {"kind": "sleep", "description": "sleep 30", "timeout": None}
                # fr_timeout is the deadline of the route and of what it awaits.
                assert tx["next_timer"]["timer"] == "fr_timeout"
                assert (
                    tx["next_timer"]["action"] == "cancel the route, 408 + failure route failover"
                )
                assert math.isclose(node["deadline_in"], tx["next_timer"]["in"], abs_tol=0.01)

                final = await caller.receive_response(status=480, method="INVITE")
                assert final.reason == "Gone Fishing"
                await call.send("ACK", to_tag=final.to.tag or "")
                await running.wait_for_tasks(lambda d: d["transactions"] == [])

                # A branch: the callee takes the INVITE, rings, and says nothing more.
                relayed = Call.new(caller, running.sip)
                await caller.send(
                    relayed.build("INVITE").replace(
                        b"Content-Length", b"X-Mode: relay\r\nContent-Length"
                    ),
                    running.sip,
                )
                invite, source = await callee.receive_request()
                again, _ = await callee.receive_request()  # Timer A: the INVITE came again
                assert again.top_via.branch == invite.top_via.branch
                await callee.respond(invite, 180, source)
                document = await running.wait_for_tasks(
                    lambda d: any(
                        n.get("client", {}).get("last_status") == 180
                        for tx in d["transactions"]
                        for n in walk(tx)
                    )
                )
                [tx] = document["transactions"]
                [branch] = [n for n in walk(tx) if n["kind"] == "branch"]
                assert branch["name"] == f"branch {callee.destination} {invite.top_via.branch}"
                assert branch["branch"]["destination"] == callee.destination
                assert branch["branch"]["provisional"] is True
                assert branch["client"]["state"] == "Proceeding"
                assert branch["client"]["retransmissions"] >= 1
                assert tx["next_timer"]["timer"] == "fr_inv_timeout"
                assert tx["next_timer"]["action"] == (
                    f"CANCEL the branch to {callee.destination}, 408 + failure route failover"
                )
                # fr_inv_timeout fires: the proxy CANCELs the branch, the callee answers
                # 200 and 487, the failure route answers 480.
                cancel, source = await callee.receive_request()
                assert cancel.method == "CANCEL"
                await callee.respond(cancel, 200, source)
                await callee.respond(invite, 487, source)
                final = await caller.receive_response(status=480, method="INVITE")
                await relayed.send("ACK", to_tag=final.to.tag or "")
                document = await running.wait_for_tasks(lambda d: d["transactions"] == [])

    assert ops_of(document) == []


def all_tasks() -> list[trio.lowlevel.Task]:
    """Every task of this run, from the root down."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    found = []
    stack = [root]
    while stack:
        task = stack.pop()
        found.append(task)
        stack.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return found


def tasks_running(code: object) -> list[trio.lowlevel.Task]:
    """The tasks of this run whose coroutine runs `code` (found by identity)."""
    return [task for task in all_tasks() if getattr(task.coro, "cr_code", None) is code]


async def test_the_tree_shows_task_less_branches_and_cancels_from_the_views() -> None:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        await req.relay(req.params["callee"])

    # T1 of 0.5 s: the CANCEL retransmits for 32 s (Timer F) unless answered, time enough
    # to look at it.
    timers: dict[str, Any] = {"t1": 0.5, "t2": 4.0, "t4": 0.05}
    with trio.fail_after(10):
        async with open_udp_peer() as caller, open_udp_peer() as callee:
            routes.params = {"callee": callee.destination}
            async with run_proxy(routes, fr_timeout=5.0, fr_inv_timeout=0.3, **timers) as running:
                await Call.new(caller, running.sip).send("INVITE")
                invite, source = await callee.receive_request()
                await callee.respond(invite, 180, source)
                await caller.receive_response(status=180, method="INVITE")
                # Over UDP a branch runs no task of its own: its client transaction is a
                # record the transaction layer runs, and the tree shows it from the view.
                assert tasks_running(ProxyTransaction._run_branch.__code__) == []
                [view] = running.proxy.inspect().all_views()
                [branch] = view.branches
                assert branch.task is None
                assert branch.client is not None
                assert branch.client.state == "Proceeding"
                document = await running.tasks()
                [node] = [n for n in walk(document["transactions"][0]) if n["kind"] == "branch"]
                assert node["name"] == f"branch {callee.destination} {branch.branch}"
                assert node["branch"]["destination"] == callee.destination
                assert node["client"]["method"] == "INVITE"
                assert node["client"]["state"] == "Proceeding"

                # fr_inv_timeout fires: the proxy CANCELs the branch (RFC 3261 §16.8).
                cancel, cancel_source = await callee.receive_request()
                assert cancel.method == "CANCEL"
                document = await running.tasks()
                [node] = [n for n in walk(document["transactions"][0]) if n["kind"] == "cancel"]
                assert node["client"]["method"] == "CANCEL"
                assert node["branch"]["cancel_sent"] is True
                [view] = running.proxy.inspect().all_views()
                [branch] = view.branches
                assert branch.cancel_task is None
                assert branch.cancel_client is not None
                assert branch.cancel_client.method == "CANCEL"
                await callee.respond(cancel, 200, cancel_source)
                await callee.respond(invite, 487, source)
                # the branch's fr timer fired: a local 408
                await caller.receive_response(status=408, method="INVITE")


async def test_launched_work_is_found_by_identity_not_by_name() -> None:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        req.launch(sleep(30), report=None)
        await req.reply(200)

    environment = ScriptEnvironment(max_launched=10)
    with trio.fail_after(10):
        async with open_udp_peer() as caller, run_proxy(routes, environment=environment) as running:
            await Call.new(caller, running.sip).send("OPTIONS")
            await caller.receive_response(status=200, method="OPTIONS")
            [task] = [t for t in all_tasks() if t.name == "launch sleep sleep 30"]
            task.name = "a renamed task"
            document = await running.wait_for_tasks(lambda d: d["transactions"] == [])
            # This used to be empty: launched work was found by the "launch " of its name.
            [node] = document["launched"]
            assert node["name"] == "a renamed task"
            assert node["op"]["description"] == "sleep 30"
            assert document["summary"]["launched"] == 1


async def test_the_running_routes_and_their_deadlines_are_found_by_identity() -> None:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        req.on_failure(failover)
        await sleep(30)  # cancelled by fr_timeout

    @routes.failure
    async def failover(req: FailureContext) -> None:
        await sleep(30)  # cancelled by its own fr_timeout

    async def wait_for_route(request_route: bool) -> tuple[TransactionView, TransactionSample]:
        """The view of the one transaction once it runs one route, the request route or
        another, and its sample as the MI takes it, both of one instant."""
        while True:
            inspection = running.proxy.inspect()
            views = inspection.all_views()
            if views and [r.request_route for r in views[0].routes] == [request_route]:
                listing = inspection.listing()
                entries = listing.entries(0, len(listing))
                [sampled] = sample_some(inspection, entries, op_accounting())
                return views[0], sampled
            await trio.sleep(0.005)

    with trio.fail_after(10):
        async with (
            open_udp_peer() as caller,
            run_proxy(routes, fr_timeout=0.5, fr_inv_timeout=120.0) as running,
        ):
            await Call.new(caller, running.sip).send("INVITE")
            view, sampled = await wait_for_route(request_route=True)
            [route] = view.routes
            assert route.request_route
            assert route.deadline == view.created_at + 0.5
            assert sampled.route_deadline == route.deadline
            assert sampled.failure_route == "failover"

            view, sampled = await wait_for_route(request_route=False)
            [route] = view.routes
            assert route.name == "failover"
            assert route.deadline > view.created_at + 0.5
            # This used to be the request route's fr_timeout, passed already: a route ran
            # (a nursery was counted), whichever it was.
            assert sampled.route_deadline is None
            await caller.receive_response(status=408, method="INVITE")
