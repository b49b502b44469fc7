"""The ``sleep`` op under a fake clock, and ``in_thread`` with real worker threads."""

from __future__ import annotations

import math
import threading
import time

import pytest
import trio

from tests.support.ops import wait_until
from triosip.ops import IN_THREAD_LIMIT, OpFailed, in_thread, in_thread_limiter, sleep
from triosip.testing.leaks import triosip_threads


async def test_sleep_sleeps(autojump_clock: trio.abc.Clock) -> None:
    op = sleep(0.05)
    assert (op.kind, op.description) == ("sleep", "sleep 0.05")
    await op
    assert trio.current_time() == pytest.approx(0.05)


async def test_sleep_is_cancellable(autojump_clock: trio.abc.Clock) -> None:
    with trio.move_on_after(1) as scope:
        await sleep(100)
    assert scope.cancelled_caught
    assert trio.current_time() == 1


@pytest.mark.parametrize("seconds", [-1, math.nan])
def test_sleep_refuses_bad_durations(seconds: float) -> None:
    with pytest.raises(ValueError, match="seconds >= 0"):
        sleep(seconds)


async def test_in_thread_returns_the_result_from_another_thread() -> None:
    def whoami(prefix: str, suffix: str) -> str:
        return f"{prefix}{threading.current_thread().name}{suffix}"

    op = in_thread(whoami, "<", ">")
    assert (op.kind, op.description) == ("thread", whoami.__qualname__)
    with trio.fail_after(5):
        name = await op
    assert name.startswith("<triosip thread ")
    assert name.endswith(">")


async def test_in_thread_errors_are_op_failed_with_the_cause() -> None:
    def broken() -> None:
        raise KeyError("missing")

    with trio.fail_after(5), pytest.raises(OpFailed, match="KeyError") as caught:
        await in_thread(broken)
    assert isinstance(caught.value.__cause__, KeyError)


async def test_cancelled_in_thread_waits_for_the_function() -> None:
    started = threading.Event()
    finished = threading.Event()

    def slow() -> str:
        started.set()
        time.sleep(0.2)  # a blocking call nothing can interrupt
        finished.set()
        return "dropped"

    with trio.fail_after(5):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(in_thread(slow).run)
                await wait_until(started.is_set)
                scope.cancel()
        # Without the shielded wait the op would return at once, the thread still running.
        assert finished.is_set()
        assert triosip_threads() == []


async def test_in_thread_runs_at_most_the_limit_at_once() -> None:
    release = threading.Event()
    lock = threading.Lock()
    running = 0
    most = 0

    def work() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(5)
        with lock:
            running -= 1

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for _ in range(IN_THREAD_LIMIT + 3):
                nursery.start_soon(in_thread(work).run)
            limiter = in_thread_limiter()
            await wait_until(
                lambda: limiter.statistics().tasks_waiting == 3 and running == IN_THREAD_LIMIT
            )
            assert limiter.borrowed_tokens == IN_THREAD_LIMIT
            release.set()
    assert most == IN_THREAD_LIMIT
