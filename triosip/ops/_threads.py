"""Blocking work in a worker thread that a cancel stops, or at least waits for.

Theory of operation. `trio.to_thread.run_sync` offers two behaviours on cancel, and neither
keeps the cancellation contract alone (docs/cancellation.md, promise 2): with
``abandon_on_cancel=False`` the cancel is ignored until the thread returns (a query counting
to 1e9 holds the transaction for minutes), and with ``True`` the caller returns at once while
the thread goes on using its connection. So we run with ``abandon_on_cancel=True`` and, when a
cancel abandons a thread, we *interrupt* it (for sqlite, ``Connection.interrupt()``) and wait
in a shielded scope until trio's thread has reported back. Only then does the caller go on,
and put its connection back.

How we know a thread has the work, and when it is done with it: each call gets a
`trio.CapacityLimiter` of one token of its own, passed as ``limiter=``. trio takes the token
just before it hands the work to a thread and gives it back once the thread has reported back
— even after abandoning it. Taking the token back is waiting for the thread.

A `WorkerGate` shared by both sides settles the races:

- cancelled after trio handed the work over but before the thread started it: the gate is
  marked abandoned, and the thread returns at once without touching anything;
- ``sqlite3_interrupt()`` is a no-op when no statement is running, so a cancel landing just
  before the statement starts would be lost: the waiting side repeats the interrupt every
  `INTERRUPT_RETRY` seconds until the thread is done;
- the work can declare that it has passed its point of no return (`WorkerGate.settle`, for
  a COMMIT or a ROLLBACK): no interrupt is delivered after that, under the gate's lock.
"""

from __future__ import annotations

import enum
import math
import threading
from typing import TYPE_CHECKING, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

# How often an interrupt is repeated while a cancelled thread has not yet returned.
INTERRUPT_RETRY = 0.005


class _State(enum.Enum):
    PENDING = enum.auto()  # handed to trio, not yet running
    RUNNING = enum.auto()  # running; interrupts are delivered
    SETTLING = enum.auto()  # past its point of no return; interrupts are not delivered
    DONE = enum.auto()  # returned
    ABANDONED = enum.auto()  # cancelled before it ran: the thread must not run the work


class _Abandoned(Exception):
    """Raised in a thread whose caller was cancelled before it started; nobody sees it."""


class WorkerGate:
    """What the trio side and the worker thread of one call share."""

    __slots__ = ("_interrupt", "_lock", "_state")

    def __init__(self, interrupt: Callable[[], None] | None) -> None:
        self._interrupt = interrupt
        self._lock = threading.Lock()
        self._state = _State.PENDING

    def settle(self) -> None:
        """Called by the work, in its thread: no interrupt may reach it from now on."""
        with self._lock:
            self._state = _State.SETTLING

    def _start(self) -> bool:
        with self._lock:
            if self._state is _State.ABANDONED:
                return False
            self._state = _State.RUNNING
            return True

    def _finish(self) -> None:
        with self._lock:
            self._state = _State.DONE

    def _abandon(self) -> None:
        """On the trio side, after a cancel: a thread that has not started must not start."""
        with self._lock:
            if self._state is _State.PENDING:
                self._state = _State.ABANDONED

    def _deliver_interrupt(self) -> None:
        with self._lock:
            if self._state is _State.RUNNING and self._interrupt is not None:
                self._interrupt()


async def run_in_worker_thread(
    function: Callable[[WorkerGate], T],
    *,
    interrupt: Callable[[], None] | None,
    thread_name: str,
    limiter: trio.CapacityLimiter | None,
) -> T:
    """Run ``function(gate)`` in a worker thread; on cancel, interrupt it and wait for it.

    Args:
        function: the blocking work; it gets the gate to call `WorkerGate.settle` on.
        interrupt: thread-safe callable that makes the work return early, or None when the
            work can't be stopped (then a cancel waits for it to finish).
        thread_name: the worker thread's name while it runs the work.
        limiter: bounds the threads, its token held until the thread is done; or None when
            the caller bounds them already (a pool of connections).

    Returns:
        What ``function`` returned.

    Raises:
        Whatever ``function`` raised, or `trio.Cancelled` once the thread has returned.
    """
    gate = WorkerGate(interrupt)
    # A limiter of one token for this call alone. trio takes its token just before it hands
    # the work to a thread, and gives it back once the thread has reported back (after the
    # work returned and the thread dropped it). So after a cancel it tells whether a thread
    # has the work, and taking the token back is waiting for that thread to be done with it.
    handed_over = trio.CapacityLimiter(1)

    def worker() -> T:
        try:
            if not gate._start():
                raise _Abandoned
            return function(gate)
        finally:
            gate._finish()

    if limiter is None:
        return await _run(worker, gate, handed_over, thread_name)
    async with limiter:
        return await _run(worker, gate, handed_over, thread_name)


async def _run(
    worker: Callable[[], T], gate: WorkerGate, handed_over: trio.CapacityLimiter, thread_name: str
) -> T:
    try:
        return await trio.to_thread.run_sync(
            worker, abandon_on_cancel=True, thread_name=thread_name, limiter=handed_over
        )
    finally:
        if handed_over.borrowed_tokens:
            # Cancelled, and abandoned by trio: a thread has the work. If it has not started,
            # it must not; if it runs, interrupt it; either way, wait for it.
            gate._abandon()
            with trio.CancelScope(shield=True):
                await _wait_for_thread(handed_over, gate)


async def _wait_for_thread(handed_over: trio.CapacityLimiter, gate: WorkerGate) -> None:
    retry = INTERRUPT_RETRY if gate._interrupt is not None else math.inf
    while True:
        gate._deliver_interrupt()
        with trio.move_on_after(retry):
            async with handed_over:
                return
