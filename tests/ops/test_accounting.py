"""Every op reports to the run's accounting: what runs now, and how each kind ended."""

import pytest
import trio

from triosip.ops import (
    LATENCY_BUCKETS,
    OpFailed,
    OpTimeout,
    exec_,
    in_thread,
    op_accounting,
    run_with_timeout,
    sleep,
)


def fail() -> None:
    raise ValueError("no")


async def test_outcomes_are_counted_by_kind(autojump_clock: trio.abc.Clock) -> None:
    accounting = op_accounting()
    await sleep(0.02)
    with pytest.raises(OpTimeout):
        await run_with_timeout(sleep(10), 1.0)
    with trio.move_on_after(0.5):
        await sleep(10)
    with pytest.raises(OpFailed):
        await in_thread(fail)
    sleeps = accounting.kinds["sleep"]
    assert sleeps.started == 3
    assert sleeps.outcomes == {"done": 1, "failed": 0, "timed_out": 1, "cancelled": 1}
    assert sum(sleeps.latency_buckets) == 3
    assert sleeps.latency_buckets[LATENCY_BUCKETS.index(0.025)] == 1  # the 20 ms sleep
    assert accounting.kinds["thread"].outcomes["failed"] == 1
    assert accounting.running == {}


async def test_a_running_op_is_listed_under_its_task(autojump_clock: trio.abc.Clock) -> None:
    accounting = op_accounting()
    op = sleep(5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(op.run, name="op sleep 5")
        await trio.sleep(1)
        [(task, running)] = accounting.running.items()
        assert running is op
        assert task.name == "op sleep 5"
        nursery.cancel_scope.cancel()
    assert accounting.running == {}


@pytest.mark.parametrize("argv", [["sleep", "5"], "sleep 5"])
async def test_an_exec_that_passes_its_timeout_is_counted_timed_out(argv: list[str] | str) -> None:
    # This used to be counted as cancelled: exec runs its pipe readers in a nursery, so its
    # cancellation comes out as a group, not as a bare trio.Cancelled.
    accounting = op_accounting()
    with trio.fail_after(5), pytest.raises(OpTimeout):
        await run_with_timeout(exec_(argv), 0.2)
    assert accounting.kinds["exec"].outcomes == {
        "done": 0,
        "failed": 0,
        "timed_out": 1,
        "cancelled": 0,
    }
