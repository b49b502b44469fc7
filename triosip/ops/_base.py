"""What every op shares: the `Op` description of work, the `OpError` tree, and timeouts.

An op is a *description* of work (a query, a request, a program) that runs at most once,
when a route awaits it or hands it to ``async_()``. Describing before running is what lets
the script layer start the op as a child task of the transaction, show what it waits on in
``triosip tasks``, and cancel it with the transaction.

Timeouts are cancel scopes: an op has no ``timeout=`` of its own, and
`run_with_timeout` is the one place where a timeout becomes a cancel scope and
its expiry becomes an `OpTimeout` the script can see (docs/cancellation.md, promise 3).
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import trio

from triosip.errors import TriosipError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator, Iterator

T = TypeVar("T")

# How much of an op's description an error message quotes (a SQL text can be long).
_QUOTED_DESCRIPTION = 200

# The upper bounds, in seconds, of the ops' latency histogram buckets (Prometheus' default
# buckets, which suit lookups of a few ms to a few s); a last bucket takes the rest.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Outcome = Literal["done", "failed", "timed_out", "cancelled"]


def _quote(description: str) -> str:
    if len(description) > _QUOTED_DESCRIPTION:
        description = description[: _QUOTED_DESCRIPTION - 3] + "..."
    return repr(description)


class OpError(TriosipError):
    """An op did not produce its result; ``str()`` says which op and why.

    Attributes:
        kind: the op's kind (``"db"``, ``"rest"``, ``"exec"``, ``"sleep"``, ``"thread"``).
        description: what the op waited on (the SQL, ``"GET http://..."``, the argv).
        reason: why it failed, in a few words.
    """

    def __init__(self, kind: str, description: str, reason: str) -> None:
        super().__init__(kind, description, reason)
        self.kind = kind
        self.description = description
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.kind} op {_quote(self.description)} failed: {self.reason}"


class OpFailed(OpError):
    """The work itself failed: an SQL error, a refused connection, a missing program."""


class OpTimeout(OpError):
    """The op's own timeout passed before it finished (`run_with_timeout`).

    Attributes:
        timeout: the timeout that passed, in seconds.
    """

    def __init__(self, kind: str, description: str, timeout: float) -> None:
        super().__init__(kind, description, f"timed out after {timeout:g} s")
        self.timeout = timeout


@dataclass(slots=True)
class OpKindStatistics:
    """The counters of one kind of op (``db``, ``rest``...), for ``triosip stats``.

    Attributes:
        started: ops that started running.
        outcomes: how many ended ``done``, ``failed``, ``timed_out`` or ``cancelled``.
        latency_buckets: how many ended within each bound of `LATENCY_BUCKETS` (not
            cumulative; the last entry counts those beyond the last bound).
        latency_sum: the seconds all ended ops took together.
    """

    started: int = 0
    outcomes: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("done", "failed", "timed_out", "cancelled"), 0)
    )
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0


class OpAccounting:
    """What runs now and what ran: the ops of one trio run, for the task tree and the
    statistics. Every `Op.run` reports here, however the script ran the op."""

    def __init__(self) -> None:
        self.running: dict[trio.lowlevel.Task, Op[Any]] = {}
        self.kinds: dict[str, OpKindStatistics] = {}

    def started(self, op: Op[Any], task: trio.lowlevel.Task) -> None:
        self.running[task] = op
        kind = self.kinds.get(op.kind)
        if kind is None:  # not setdefault: it would build the statistics for every op
            kind = self.kinds[op.kind] = OpKindStatistics()
        kind.started += 1

    def ended(self, op: Op[Any], task: trio.lowlevel.Task, outcome: Outcome) -> None:
        self.running.pop(task, None)
        kind = self.kinds[op.kind]
        kind.outcomes[outcome] += 1
        assert op.started_at is not None
        took = trio.current_time() - op.started_at
        kind.latency_sum += took
        kind.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, took)] += 1


_accounting: trio.lowlevel.RunVar[OpAccounting] = trio.lowlevel.RunVar("triosip_op_accounting")


def op_accounting() -> OpAccounting:
    """The `OpAccounting` of the current trio run (made on first use)."""
    try:
        return _accounting.get()
    except LookupError:
        accounting = OpAccounting()
        _accounting.set(accounting)
        return accounting


# What `op_faults` installs: awaited before each op's work, in the op's task.
_fault_hook: contextvars.ContextVar[Callable[[Op[Any]], Awaitable[None]] | None] = (
    contextvars.ContextVar("triosip_op_fault_hook", default=None)
)


@contextlib.contextmanager
def op_faults(hook: Callable[[Op[Any]], Awaitable[None]]) -> Iterator[None]:
    """Make every op started within the block (in this task, or in tasks started from it)
    await `hook` before its work: ``triosip check``'s drill injects faults at this boundary.

    The hook runs in the op's task, inside `Op.run`: it may wait (the op then pends, and a
    CANCEL, the fr timer or the op's own timeout cancel it as they would the work), raise
    `OpFailed` (the route sees a failed op), or return at once (the work runs for real).
    Outside such a block, an op costs one context-variable read more.

    Args:
        hook: the async function each op awaits, given the op.
    """
    token = _fault_hook.set(hook)
    try:
        yield
    finally:
        _fault_hook.reset(token)


class Op(Generic[T]):
    """A description of work that runs at most once, cancellable at any await.

    ``await op`` is ``await op.run()``. Ops are made by `Database.query`, `RestClient.get`,
    `exec_`, `sleep`, `in_thread` and friends; an op of your own is an async function with
    no arguments plus the words that describe it::

        op = Op("rest", "GET http://ldap-gw/user", fetch_user)

    Attributes:
        kind: ``"db"``, ``"rest"``, ``"exec"``, ``"sleep"`` or ``"thread"``.
        description: what it waits on, as ``triosip tasks`` shows it.
        started_at: `trio.current_time` when it started running, or None before.
        timeout: the op's own limit in seconds, when it runs under one (`run_with_timeout`).
    """

    __slots__ = ("_function", "description", "kind", "started_at", "timeout")

    def __init__(self, kind: str, description: str, function: Callable[[], Awaitable[T]]) -> None:
        """Describe work.

        Args:
            kind: the family of the work (``"db"``, ``"rest"``, …).
            description: what it waits on, in one line.
            function: the async function, with no arguments, that does the work.
        """
        self.kind = kind
        self.description = description
        self.started_at: float | None = None
        self.timeout: float | None = None
        self._function = function

    async def run(self) -> T:
        """Run the work and return its result.

        Returns:
            The op's result.

        Raises:
            OpFailed: the work failed.
            OpTimeout: the work's own time limit passed.
            RuntimeError: this op has run before (an op runs at most once).
        """
        if self.started_at is not None:
            raise RuntimeError(f"{self!r} has already run: an op runs at most once")
        self.started_at = trio.current_time()
        accounting = op_accounting()
        task = trio.lowlevel.current_task()
        accounting.started(self, task)
        outcome: Outcome | None = None  # None: cancelled, by some scope or other
        try:
            hook = _fault_hook.get()
            if hook is not None:
                await hook(self)
            result = await self._function()
            outcome = "done"
        except OpTimeout:
            outcome = "timed_out"
            raise
        except OpError:
            outcome = "failed"
            raise
        except Exception:
            outcome = "failed"
            raise
        finally:
            # Cancelled, as a bare trio.Cancelled or inside a group (an op that runs a
            # nursery, as exec does): by its own timeout, or by the transaction's scope.
            if outcome is None:
                timeout = self.timeout
                expired = timeout is not None and trio.current_time() >= self.started_at + timeout
                outcome = "timed_out" if expired else "cancelled"
            accounting.ended(self, task, outcome)
        return result

    def __await__(self) -> Generator[Any, None, T]:
        return self.run().__await__()

    def __repr__(self) -> str:
        return f"<Op {self.kind} {_quote(self.description)}>"


async def run_with_timeout(op: Op[T], timeout: float | None) -> T:  # noqa: ASYNC109
    """Run ``op`` under its own timeout: the one place an op timeout becomes a cancel scope.

    (``ASYNC109`` would have callers wrap the call in a scope themselves; this function *is*
    that wrapper, so that the script API's ``timeout=`` is turned into a scope in one place.)

    Args:
        op: the op to run.
        timeout: seconds the op may take, or None for no limit of its own (the transaction's
            timers still apply: they are scopes around this call).

    Returns:
        The op's result.

    Raises:
        OpTimeout: ``timeout`` passed first; the op was cancelled (and cleaned up) before
            this is raised.
        OpFailed: the op failed.
    """
    if timeout is None:
        return await op.run()
    op.timeout = timeout
    # trio.fail_after's scope, without its context-manager generator (a few µs per op).
    with trio.CancelScope(deadline=trio.current_time() + timeout):
        return await op.run()
    raise OpTimeout(op.kind, op.description, timeout)
