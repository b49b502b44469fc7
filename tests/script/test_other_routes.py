"""The cancellation contract beyond the request route: the failure and onreply routes run
their ops inside a scope of their own (``fr_timeout`` long) that a CANCEL cancels too. Only
time matters here (sleep ops), so the tests run under `autojump_clock` and assert exact times.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from tests.support.script import Journal, assert_nothing_left, open_callee, open_harness
from triosip.script.api import FailureContext, ReplyContext, RequestContext, Routes, sleep
from triosip.testing.leaks import Resources

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("nothing_left_behind")

FR = 30.0


def failure_routes(journal: Journal) -> Routes:
    """Users ``<mode>``: the request route waits on a 60 s sleep until the fr timer cancels
    it; the failure route then runs a 60 s sleep by ``async_`` or ``await``."""
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        if req.is_stateless:
            return
        journal.add(req.call_id, "request")
        req.on_failure(failed)
        await sleep(60)
        journal.add(req.call_id, "after await")

    @routes.failure
    async def failed(req: FailureContext) -> None:
        journal.add(req.call_id, "failure", req.status)
        if req.ruri_user == "async":
            req.async_(sleep(60), resume=failure_resumed)
            return
        await sleep(60)
        journal.add(req.call_id, "after await in failure")
        await req.reply(500, "Resumed")

    @routes.resume
    async def failure_resumed(req: FailureContext) -> None:
        journal.add(req.call_id, "resume", (req.result, req.error))
        await req.reply(500, "Resumed")

    return routes


@pytest.mark.parametrize("mode", ["async", "await"])
@pytest.mark.parametrize("cancel", [False, True], ids=["fr-timeout", "cancel"])
async def test_an_op_pending_in_the_failure_route_is_cancelled(
    mode: str, cancel: bool, tmp_path: Path, autojump_clock: object
) -> None:
    journal = Journal()
    with trio.fail_after(300):
        async with open_harness(
            failure_routes(journal), tmp_path, fr_timeout=FR, resources=False
        ) as harness:
            before = Resources.now()
            call = await harness.caller.invite(mode)
            await trio.sleep(FR + 10)  # the failure route's sleep is pending now
            assert journal.kinds(call.call_id) == ["request", "failure"]
            if cancel:
                await harness.caller.send(call.build("CANCEL"))
            final = await harness.caller.final_response(call)
            await trio.sleep(100)  # long after every sleep would have ended
            await assert_nothing_left(harness, before, processes=[], cancelled_rests=0)

    assert journal.kinds(call.call_id) == ["request", "failure"]
    assert journal.of(call.call_id, "failure") == [408]
    if cancel:
        assert call.finals("CANCEL") == [200]
        assert final.response.status == 487
        assert final.at == pytest.approx(call.sent_at + FR + 10)  # at once
    else:
        # The failure route's own fr_timeout passed: the 408 it saw goes upstream.
        assert final.response.status == 408
        assert final.at == pytest.approx(call.sent_at + 2 * FR)
    assert set(call.finals()) == {final.response.status}


def reply_routes(journal: Journal) -> Routes:
    """Users ``<mode>``: the INVITE is relayed to the callee; the onreply route runs a 60 s
    sleep for its 180, by ``async_`` or ``await``."""
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        if req.is_stateless:
            return
        journal.add(req.call_id, "request")
        req.on_reply(replied)
        await req.relay(req.params["callee"])

    @routes.onreply
    async def replied(req: ReplyContext) -> None:
        journal.add(req.request.call_id, "reply", req.status)
        if req.status != 180:
            return
        if req.request.uri.user == "async":
            req.async_(sleep(60), resume=reply_resumed)
            return
        await sleep(60)
        journal.add(req.request.call_id, "after await in onreply")

    @routes.resume
    async def reply_resumed(req: ReplyContext) -> None:
        journal.add(req.request.call_id, "resume", (req.result, req.error))

    return routes


@pytest.mark.parametrize("mode", ["async", "await"])
async def test_a_cancel_while_an_onreply_op_is_pending_cancels_the_branch_downstream(
    mode: str, tmp_path: Path, autojump_clock: object
) -> None:
    journal = Journal()
    routes = reply_routes(journal)
    with trio.fail_after(300):
        async with (
            open_harness(routes, tmp_path, fr_timeout=FR, resources=False) as harness,
            trio.open_nursery() as nursery,
            open_callee(nursery) as callee,
        ):
            routes.params = {"callee": callee.destination}
            before = Resources.now()
            call = await harness.caller.invite(mode)
            await trio.sleep(5)  # the callee rings; the onreply route's sleep is pending
            assert journal.kinds(call.call_id) == ["request", "reply"]
            cancelled_at = trio.current_time()
            await harness.caller.send(call.build("CANCEL"))
            final = await harness.caller.final_response(call)
            await trio.sleep(100)  # long after every sleep would have ended
            await assert_nothing_left(harness, before, processes=[], cancelled_rests=0)

    assert call.finals("CANCEL") == [200]
    assert set(call.finals()) == {487}
    assert final.at == pytest.approx(cancelled_at)
    # RFC 3261 §16.10: the callee rang (it sent a 180), so its branch gets a CANCEL (§9.1)
    # rather than being dropped while it still rings.
    assert callee.methods()[:1] == ["INVITE"]
    assert "CANCEL" in callee.methods(), callee.methods()
    # The onreply route was cancelled: it never resumed, and no other route ran.
    assert journal.of(call.call_id, "resume") == []
    assert "after await in onreply" not in journal.kinds(call.call_id)
