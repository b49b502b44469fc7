"""Running ops for routes: one op or several at once, under the script's ``timeout=``, and
the work that `launch()` starts beyond its transaction.

This is the one place where a script's ``timeout=`` becomes a cancel scope:
`run_ops` wraps the ops in it, and its expiry becomes an `OpTimeout` the resume route sees.
Every op runs in a task named after what it waits on (``op db SELECT ...``), so that
``triosip tasks`` shows it under its transaction.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from triosip.errors import TriosipError
from triosip.ops import Op, OpError, OpTimeout, in_thread, run_with_timeout

if TYPE_CHECKING:
    from triosip.ops import Database, RestClient

logger = logging.getLogger(__name__)

# How much of an op's description goes into its task's name.
_TASK_NAME_LENGTH = 120

# What a script may hand to async_(), await_op() and friends: an op, or a plain blocking
# function of no arguments, which then runs in a worker thread (the script reads
# the same either way).
OpLike = Op[Any] | Callable[[], Any]


class ScriptError(TriosipError):
    """A route asked for something that can't be done (replying to an ACK, an async_()
    outside a route, too many launched ops...)."""


def as_op(work: OpLike) -> Op[Any]:
    """The op for `work`: itself, or a plain function wrapped to run in a worker thread.

    Raises:
        ScriptError: `work` is neither an op nor callable (a coroutine, say).
    """
    if isinstance(work, Op):
        return work
    anything: object = work  # scripts are untyped: check for what the types exclude
    if inspect.iscoroutine(anything):
        anything.close()  # never to run: close it, or Python warns it was never awaited
        raise ScriptError(
            f"{anything.__qualname__}() is a coroutine, not an op: wrap the async function in "
            "Op(kind, description, function), or pass a plain function"
        )
    if inspect.iscoroutinefunction(work):
        raise ScriptError(
            f"{work.__qualname__} is an async function, not an op: wrap it in "
            "Op(kind, description, function), or pass a plain function"
        )
    if callable(work):
        return in_thread(work)
    raise ScriptError(
        f"{work!r} is not an op: pass an op (db.query(...), rest.get(...), exec_(...), "
        "sleep(...)) or a plain function"
    )


def task_name(prefix: str, op: Op[Any]) -> str:
    """The name of the task that runs `op`, as ``triosip tasks`` shows it."""
    name = f"{prefix} {op.kind} {op.description}"
    return name if len(name) <= _TASK_NAME_LENGTH else name[: _TASK_NAME_LENGTH - 3] + "..."


async def run_ops(ops: Sequence[Op[Any]], timeout: float | None) -> list[Any]:  # noqa: ASYNC109
    """Run `ops` at once and return their results, in order.

    (ASYNC109: this is the one function that turns the script API's ``timeout=`` into a
    scope.) The first op to fail cancels the others, which are cleaned up before its error
    is raised: a script never sees half of a parallel lookup.

    Args:
        ops: the ops; one runs in the caller's task, several each in a task of its own.
        timeout: seconds they may take together, or None for no limit of their own.

    Returns:
        Each op's result, in the order of `ops`.

    Raises:
        OpError: the first op that failed, or `OpTimeout` when `timeout` passed first.
    """
    if len(ops) == 1:
        return [await run_with_timeout(ops[0], timeout)]
    results: list[Any] = [None] * len(ops)
    failures: list[OpError] = []

    async def run_one(index: int, op: Op[Any], nursery: trio.Nursery) -> None:
        try:
            results[index] = await op.run()
        except OpError as exc:
            failures.append(exc)
            nursery.cancel_scope.cancel()

    with trio.move_on_after(timeout if timeout is not None else float("inf")) as limit:
        async with trio.open_nursery() as nursery:
            for index, op in enumerate(ops):
                nursery.start_soon(run_one, index, op, nursery, name=task_name("op", op))
    if failures:
        raise failures[0]
    if limit.cancelled_caught:
        assert timeout is not None
        raise OpTimeout("ops", "; ".join(op.description for op in ops), timeout)
    return results


class ScriptEnvironment:
    """What routes reach beyond their transaction: the database, the REST client, and the
    nursery of work started by `launch()`, which `serve()` owns.

    Args:
        db: the database behind ``req.db``, or None if the proxy runs without one.
        rest: the HTTP client behind ``req.rest``, or None.
        max_launched: how many launched ops may run at once; a launch beyond that is refused.
    """

    def __init__(
        self,
        *,
        db: Database | None = None,
        rest: RestClient | None = None,
        max_launched: int = 1000,
    ) -> None:
        self.db = db
        self.rest = rest
        self.max_launched = max_launched
        self.launched = 0
        self._nursery: trio.Nursery | None = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the launched work until cancelled (at shutdown), which cancels it."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def launched_tasks(self) -> list[trio.lowlevel.Task]:
        """The tasks of the launched work running now (for the management interface)."""
        return list(self._nursery.child_tasks) if self._nursery is not None else []

    def launch(self, op: Op[Any], work: Callable[[], Awaitable[None]]) -> None:
        """Start `work` (which runs `op`, then reports) beyond any transaction.

        Raises:
            ScriptError: the environment is not serving, or `max_launched` ops run already.
        """
        if self._nursery is None:
            raise ScriptError("launch() needs a running proxy")
        if self.launched >= self.max_launched:
            raise ScriptError(f"launch() refused: {self.launched} launched ops run already")
        self.launched += 1

        async def run() -> None:
            try:
                await work()
            finally:
                self.launched -= 1

        self._nursery.start_soon(run, name=task_name("launch", op))
