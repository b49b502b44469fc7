"""`Op`, the `OpError` tree and `run_with_timeout`, on the simplest op (`sleep`) and fake clock."""

from __future__ import annotations

import pytest
import trio

from triosip.errors import TriosipError
from triosip.ops import (
    Op,
    OpError,
    OpFailed,
    OpTimeout,
    op_accounting,
    op_faults,
    run_with_timeout,
    sleep,
)


async def test_await_op_runs_it_once_and_records_when(autojump_clock: trio.abc.Clock) -> None:
    calls = []

    async def work() -> str:
        calls.append(trio.current_time())
        return "result"

    op = Op("thread", "work", work)
    await trio.sleep(3)
    before = op.started_at
    assert before is None
    assert await op == "result"
    assert op.started_at == 3
    assert calls == [3]
    with pytest.raises(RuntimeError, match="at most once"):
        await op.run()
    assert calls == [3]


def test_op_repr_and_error_messages() -> None:
    op = Op("db", "SELECT 1", sleep(0).run)
    assert repr(op) == "<Op db 'SELECT 1'>"
    failed = OpFailed("db", "SELECT * FROM nope", "no such table: nope")
    assert str(failed) == "db op 'SELECT * FROM nope' failed: no such table: nope"
    assert (failed.kind, failed.description, failed.reason) == (
        "db",
        "SELECT * FROM nope",
        "no such table: nope",
    )
    timeout = OpTimeout("rest", "GET http://x/", 2.5)
    assert str(timeout) == "rest op 'GET http://x/' failed: timed out after 2.5 s"
    assert timeout.timeout == 2.5
    assert isinstance(failed, OpError)
    assert isinstance(timeout, OpError)
    assert isinstance(failed, TriosipError)


def test_a_long_description_is_shortened_in_messages() -> None:
    sql = "SELECT " + ", ".join(f"c{i}" for i in range(200)) + " FROM t"
    error = OpFailed("db", sql, "boom")
    assert error.description == sql
    assert len(str(error)) < 250
    assert "..." in str(error)


async def _nap() -> str:
    await trio.sleep(1)
    return "rested"


async def test_run_with_timeout_raises_op_timeout(autojump_clock: trio.abc.Clock) -> None:
    with pytest.raises(OpTimeout) as caught:
        await run_with_timeout(sleep(10), 2)
    assert trio.current_time() == 2
    assert caught.value.kind == "sleep"
    assert caught.value.description == "sleep 10"
    assert caught.value.timeout == 2
    assert str(caught.value) == "sleep op 'sleep 10' failed: timed out after 2 s"


async def test_run_with_timeout_returns_in_time(autojump_clock: trio.abc.Clock) -> None:
    assert await run_with_timeout(Op("sleep", "nap", _nap), 2) == "rested"
    assert trio.current_time() == 1
    assert await run_with_timeout(Op("sleep", "nap", _nap), None) == "rested"
    assert trio.current_time() == 2


async def test_an_outer_scope_still_cancels_under_run_with_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The transaction's timer is a scope around the op: it wins over a longer op timeout,
    # and the op's cancellation is not mistaken for the op's own timeout.
    with trio.move_on_after(1) as transaction_timer:
        await run_with_timeout(sleep(10), 5)
    assert transaction_timer.cancelled_caught
    assert trio.current_time() == 1


async def test_op_errors_pass_through_run_with_timeout() -> None:
    async def fail() -> None:
        raise OpFailed("exec", "false", "exit status 1")

    with trio.fail_after(5), pytest.raises(OpFailed, match="exit status 1"):
        await run_with_timeout(Op("exec", "false", fail), 1)


async def test_op_faults_make_ops_pend_or_fail_in_their_own_task(autojump_clock: object) -> None:
    # triosip check's hook: an op that pends is cancelled by its own timeout as its work
    # would be (OpTimeout, counted timed out); one that fails never starts its work.
    ran: list[str] = []

    async def work() -> str:
        ran.append("work")
        return "done"

    async def pend(op: Op[object]) -> None:
        await trio.sleep_forever()

    async def fail(op: Op[object]) -> None:
        raise OpFailed(op.kind, op.description, "injected")

    with op_faults(pend), pytest.raises(OpTimeout):
        await run_with_timeout(Op("test", "pends", work), 1.0)
    with op_faults(fail), pytest.raises(OpFailed, match="injected"):
        await Op("test", "fails", work)
    assert await Op("test", "runs", work) == "done"  # outside the blocks: the work runs
    assert ran == ["work"]
    outcomes = op_accounting().kinds["test"].outcomes
    assert (outcomes["timed_out"], outcomes["failed"], outcomes["done"]) == (1, 1, 1)
