"""The ``sleep`` op, and the ``thread`` op that runs a plain blocking function.

A plain function has no async implementation, so `in_thread` runs it in a worker thread
(the script reads the same either way). A thread can't be stopped from outside: when
the op is cancelled, it waits — shielded — for the function to return, and drops its result,
so that no thread outlives the transaction that started it. The cancel therefore takes as long
as the function: keep such functions short, or give the work a real async op (`exec_`, a
`Database` query with its interrupt, a `RestClient` request).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import trio

from triosip.ops._base import Op, OpFailed
from triosip.ops._threads import run_in_worker_thread

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

# How many plain functions may run in threads at once, per trio run; more wait their turn.
IN_THREAD_LIMIT = 8

_thread_limiter: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar(
    "triosip_in_thread_limiter"
)


def in_thread_limiter() -> trio.CapacityLimiter:
    """The limiter shared by every `in_thread` op of this trio run.

    Returns:
        It, made on first use with `IN_THREAD_LIMIT` tokens; its ``total_tokens`` may be set.
    """
    try:
        return _thread_limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(IN_THREAD_LIMIT)
        _thread_limiter.set(limiter)
        return limiter


def sleep(seconds: float) -> Op[None]:
    """An op that sleeps.

    Args:
        seconds: how long, at least 0.

    Returns:
        An op (kind ``"sleep"``, described as ``"sleep 0.05"``) with no result.

    Raises:
        ValueError: ``seconds`` is negative or NaN.
    """
    if not seconds >= 0:
        raise ValueError(f"sleep needs seconds >= 0, not {seconds}")

    async def run() -> None:
        await trio.sleep(seconds)

    return Op("sleep", f"sleep {seconds:g}", run)


def in_thread(function: Callable[..., T], *args: Any) -> Op[T]:
    """An op that runs a plain blocking function in a worker thread.

    At most `IN_THREAD_LIMIT` such functions run at once. If the op is cancelled, it waits
    until the function has returned and discards the result: a thread can't be stopped, and
    none may outlive its transaction. So a cancel takes as long as the function.

    Args:
        function: a blocking function; it must not call trio.
        *args: its positional arguments.

    Returns:
        An op (kind ``"thread"``, described by the function's name) whose result is what
        ``function`` returned.

    Raises:
        OpFailed: (when run) ``function`` raised an `Exception`; it is the ``__cause__``.
    """
    name = getattr(function, "__qualname__", None) or repr(function)

    async def run() -> T:
        try:
            return await run_in_worker_thread(
                lambda _gate: function(*args),
                interrupt=None,
                thread_name=f"triosip thread {name}",
                limiter=in_thread_limiter(),
            )
        except Exception as exc:
            raise OpFailed("thread", name, f"{type(exc).__name__}: {exc}") from exc

    return Op("thread", name, run)
