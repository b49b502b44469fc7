"""The drill's verdict on one call, from what was observed: each promise of the
cancellation contract that a call can break is a problem the table names."""

from __future__ import annotations

import pytest

from triosip.drill._faults import FAULTS
from triosip.drill._journal import Ran
from triosip.drill._run import Observed
from triosip.drill._verdict import judge

FAULT = {fault.name: fault for fault in FAULTS}
STALL = 0.1


def _observed(name: str, **fields: object) -> Observed:
    observed = Observed(FAULT[name])
    observed.finals = [487]
    observed.ops = ["db"]
    observed.callee_reached = True
    observed.cancel_sent = True
    for field, value in fields.items():
        setattr(observed, field, value)
    return observed


def test_a_clean_call_passes() -> None:
    verdict = judge(_observed("cancel", cancelled_at=1.0), stall_limit=STALL)
    assert (verdict.problems, verdict.skipped, verdict.answer) == ((), None, "487")


def test_a_resume_route_after_the_cancel_fails() -> None:
    observed = _observed("cancel", cancelled_at=1.0)
    observed.journal.ran[:] = [Ran("main", "request", 0.5), Ran("found", "resume", 1.2)]
    assert judge(observed, stall_limit=STALL).problems == (
        "resume route found ran after the cancel",
    )


def test_a_resume_route_before_the_fr_timer_is_fine_after_it_fails() -> None:
    # The op's own timeout (0.1 s) may resume before the fr timer (0.2 s), never after.
    observed = _observed("fr-timeout", sent_at=1.0, fr=0.2, finals=[408])
    observed.journal.ran[:] = [Ran("main", "request", 1.0), Ran("found", "resume", 1.1)]
    assert judge(observed, stall_limit=STALL).problems == ()
    observed.journal.ran.append(Ran("found", "resume", 1.3))
    assert judge(observed, stall_limit=STALL).failed


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"finals": []}, "no final response"),
        ({"finals": [487, 200]}, "several final responses: 200, 487"),
        ({"stall": 0.3, "stalled_task": "IST"}, "blocked the proxy 300 ms (task IST)"),
        ({"left": {"threads": ["mine"]}}, "threads left: mine"),
        ({"left": {"fds": {"7": "socket:[1]"}}}, "fds left: socket:[1]"),
        ({"pools": ["1 REST requests in flight"]}, "1 REST requests in flight after the call"),
        ({"unended": ["1 server transactions"]}, "transactions never ended: 1 server transactions"),
    ],
)
def test_each_broken_promise_is_named(fields: dict[str, object], problem: str) -> None:
    assert judge(_observed("486", **fields), stall_limit=STALL).problems == (problem,)


def test_a_failure_route_twice_fails() -> None:
    observed = _observed("486", finals=[486])
    observed.journal.ran[:] = [Ran("failover", "failure", 1.0), Ran("failover", "failure", 2.0)]
    assert judge(observed, stall_limit=STALL).problems == ("failure route ran 2 times",)


@pytest.mark.parametrize(
    ("name", "fields", "skipped"),
    [
        ("op-fails", {"ops": []}, "the route started no op"),
        ("486", {"callee_reached": False}, "the route never relayed to the callee"),
        ("cancel", {"cancel_sent": False}, "nothing was pending to CANCEL"),
    ],
)
def test_a_fault_that_does_not_apply_is_skipped(
    name: str, fields: dict[str, object], skipped: str
) -> None:
    verdict = judge(_observed(name, **fields), stall_limit=STALL)
    assert (verdict.failed, verdict.skipped) == (False, skipped)
