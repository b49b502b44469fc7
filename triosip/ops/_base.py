"""What every op shares: the `Op` description of work, the `OpError` tree, and timeouts.

An op is a *description* of work (a query, a request, a program) that runs at most once,
when a route awaits it or hands it to ``async_()``. Describing before running is what lets
the script layer start the op as a child task of the transaction, show what it waits on in
``triosip tasks``, and cancel it with the transaction.

Timeouts are cancel scopes (STYLE rule 7): an op has no ``timeout=`` of its own, and
`run_with_timeout` is the one place where a timeout becomes a `trio.fail_after` scope and
its expiry becomes an `OpTimeout` the script can see (DESIGN, cancellation contract 3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

from triosip.errors import TriosipError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator

T = TypeVar("T")

# How much of an op's description an error message quotes (a SQL text can be long).
_QUOTED_DESCRIPTION = 200


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
    """

    __slots__ = ("_function", "description", "kind", "started_at")

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
        return await self._function()

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
    try:
        with trio.fail_after(timeout):
            return await op.run()
    except trio.TooSlowError:
        raise OpTimeout(op.kind, op.description, timeout) from None
