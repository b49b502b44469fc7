"""`run_in_worker_thread`, the mechanism under the db and thread ops, with a fake statement.

``FakeStatement`` behaves as sqlite's ``interrupt()`` does: an interrupt delivered while no
statement runs is a no-op, and a statement stops only if the interrupt lands while it runs.
"""

from __future__ import annotations

import threading
import time

import pytest
import trio
import trio.testing

from tests.support.ops import wait_until
from triosip.ops._threads import WorkerGate, run_in_worker_thread
from triosip.testing.leaks import triosip_threads


class FakeStatement:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = False
        self.interrupted = False
        self.started = threading.Event()
        self.calls = 0

    def interrupt(self) -> None:
        with self.lock:
            if self.running:  # like sqlite3_interrupt: a no-op between statements
                self.interrupted = True

    def run(
        self, gate: WorkerGate, *, prelude: float = 0.0, settle: bool = False, duration: float = 5
    ) -> str:
        self.calls += 1
        self.started.set()
        time.sleep(prelude)  # work before the statement starts (an interrupt is lost there)
        with self.lock:
            self.running = True
        if settle:
            gate.settle()
        deadline = time.monotonic() + duration
        try:
            while time.monotonic() < deadline:
                with self.lock:
                    if self.interrupted:
                        return "interrupted"
                time.sleep(0.001)
            return "ran to the end"
        finally:
            with self.lock:
                self.running = False


async def _start_then_cancel(
    statement: FakeStatement, *, prelude: float = 0.0, settle: bool = False, duration: float = 5
) -> float:
    """Start the statement, cancel it once its thread runs; return how long the cancel took."""
    limiter = trio.CapacityLimiter(1)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: run_in_worker_thread(
                    lambda gate: statement.run(
                        gate, prelude=prelude, settle=settle, duration=duration
                    ),
                    interrupt=statement.interrupt,
                    thread_name="triosip test",
                    limiter=limiter,
                )
            )
            await wait_until(statement.started.is_set)
            cancelled_at = trio.current_time()
            scope.cancel()
    assert triosip_threads() == []  # the thread has returned before the cancel did
    assert limiter.borrowed_tokens == 0
    return trio.current_time() - cancelled_at


async def test_a_cancel_interrupts_a_running_statement() -> None:
    statement = FakeStatement()
    with trio.fail_after(10):
        took = await _start_then_cancel(statement)
    assert statement.interrupted
    assert took < 1


async def test_an_interrupt_landing_before_the_statement_is_repeated() -> None:
    # The cancel comes while the thread is still in its prelude: a single interrupt would be a
    # no-op and the statement would run its full 5 s.
    statement = FakeStatement()
    with trio.fail_after(10):
        took = await _start_then_cancel(statement, prelude=0.1)
    assert statement.interrupted
    assert took < 1


async def test_no_interrupt_reaches_work_past_its_point_of_no_return() -> None:
    statement = FakeStatement()
    with trio.fail_after(10):
        took = await _start_then_cancel(statement, settle=True, duration=0.3)
    # It ran to its end (0.3 s of fake commit), uninterrupted, and the cancel waited for it.
    assert not statement.interrupted
    assert took >= 0.25


async def test_a_call_cancelled_while_waiting_for_a_thread_never_runs() -> None:
    statement = FakeStatement()
    limiter = trio.CapacityLimiter(1)
    release = trio.Event()

    async def hold_the_only_token() -> None:
        async with limiter:
            await release.wait()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold_the_only_token)
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(0.05) as scope:
                await run_in_worker_thread(
                    statement.run,
                    interrupt=statement.interrupt,
                    thread_name="triosip test",
                    limiter=limiter,
                )
            release.set()
    assert scope.cancelled_caught
    assert statement.calls == 0


async def test_results_and_errors_come_back() -> None:
    limiter = trio.CapacityLimiter(1)

    def fail(gate: WorkerGate) -> None:
        raise ZeroDivisionError

    with trio.fail_after(5):
        assert (
            await run_in_worker_thread(
                lambda gate: 42, interrupt=None, thread_name="triosip test", limiter=limiter
            )
            == 42
        )
        with pytest.raises(ZeroDivisionError):
            await run_in_worker_thread(fail, interrupt=None, thread_name="t", limiter=limiter)
