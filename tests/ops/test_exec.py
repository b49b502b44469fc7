"""The ``exec`` op with real processes; process states are read from /proc."""

from __future__ import annotations

import ctypes
import os
from typing import TYPE_CHECKING

import pytest
import trio

from tests.support.ops import wait_until
from triosip.ops import TERMINATE_GRACE, OpFailed, OpTimeout, _exec, exec_, run_with_timeout
from triosip.testing.leaks import proc_state

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

# prctl(2): orphaned descendants are re-parented to a "child subreaper" instead of init.
PR_SET_CHILD_SUBREAPER = 36


def _pids_written(pidfile: Path) -> list[int]:
    """The pids a test command wrote, once it has written its whole line; else []."""
    text = pidfile.read_text() if pidfile.exists() else ""
    return [int(pid) for pid in text.split()] if text.endswith("\n") else []


def _not_running(pid: int) -> bool:
    state = proc_state(pid)
    # Gone (reaped), or a zombie: dead, and not ours to reap (init reaps it).
    return state is None or (state[0] == "Z" and state[1] != os.getpid())


async def _cancel_once_started(command: str, pidfile: Path) -> tuple[list[int], float]:
    """Run ``command`` until it wrote its pids, cancel it; return the pids and the cancel's time."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(exec_(command).run)
            await wait_until(lambda: _pids_written(pidfile))
            pids = _pids_written(pidfile)
            cancelled_at = trio.current_time()
            scope.cancel()
    return pids, trio.current_time() - cancelled_at


@pytest.fixture
def subreaper() -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


async def test_output_and_exit_status_are_captured() -> None:
    op = exec_(["sh", "-c", "printf 'out é'; printf err >&2; exit 3"])
    assert (op.kind, op.description) == (
        "exec",
        "sh -c 'printf '\"'\"'out é'\"'\"'; printf err >&2; exit 3'",
    )
    with trio.fail_after(5):
        result = await op
    assert result.returncode == 3
    assert not result.ok
    assert (result.stdout, result.stderr) == ("out é".encode(), b"err")
    assert (result.stdout_text, result.stderr_text) == ("out é", "err")
    assert not result.truncated


async def test_a_str_runs_in_the_shell_with_extra_environment() -> None:
    with trio.fail_after(5):
        result = await exec_('echo "$GREETING" | tr a-z A-Z', env={"GREETING": "hello"})
    assert result.ok
    assert result.stdout == b"HELLO\n"  # PATH came from the proxy's environment


async def test_a_signal_is_a_negative_status() -> None:
    with trio.fail_after(5):
        result = await exec_("kill -TERM $$")
    assert result.returncode == -15


async def test_stdin_is_fed_and_closed() -> None:
    with trio.fail_after(5):
        assert (await exec_(["cat"], stdin="hello\n")).stdout == b"hello\n"
        # More than a pipe holds: fed while the output is read.
        counted = await exec_(["wc", "-c"], stdin=b"x" * 3_000_000)
        assert counted.stdout.strip() == b"3000000"
        # A program that exits without reading its input is not an error.
        assert (await exec_(["true"], stdin=b"x" * 3_000_000)).ok
        # No stdin: /dev/null, so a reader of stdin ends at once.
        assert (await exec_(["cat"])).stdout == b""


async def test_output_is_bounded_and_drained() -> None:
    with trio.fail_after(5):
        # 5 MB on each pipe: a program blocked on a full pipe would never exit.
        result = await exec_(
            "head -c 5000000 /dev/zero; head -c 5000000 /dev/zero >&2", max_output=1000
        )
    assert result.ok
    assert (len(result.stdout), len(result.stderr)) == (1000, 1000)
    assert result.truncated
    with trio.fail_after(5):
        exact = await exec_("printf 12345", max_output=5)
    assert (exact.stdout, exact.truncated) == (b"12345", False)


async def test_a_missing_program_is_op_failed(tmp_path: Path) -> None:
    not_executable = tmp_path / "script"
    not_executable.write_text("#!/bin/sh\necho hi\n")
    with trio.fail_after(5):
        with pytest.raises(OpFailed, match="can't run '/no/such/program': No such file") as caught:
            await exec_(["/no/such/program", "arg"])
        assert caught.value.kind == "exec"
        assert caught.value.description == "/no/such/program arg"
        with pytest.raises(OpFailed, match="Permission denied"):
            await exec_([str(not_executable)])
        # Through the shell, the shell starts and says so with status 127.
        assert (await exec_("no-such-program-here")).returncode == 127


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="needs a command"):
        exec_([])
    with pytest.raises(ValueError, match="max_output"):
        exec_(["true"], max_output=-1)


async def test_a_cancel_terminates_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    with trio.fail_after(5):
        (leader, grandchild), took = await _cancel_once_started(
            f"sleep 100 & echo $$ $! > {pidfile}; wait", pidfile
        )
    assert took < TERMINATE_GRACE  # SIGTERM was enough, no need to wait for SIGKILL
    assert proc_state(leader) is None  # reaped by us: no zombie
    assert _not_running(grandchild)  # killed with its group, not only the leader


async def test_processes_that_ignore_sigterm_get_sigkill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_exec, "TERMINATE_GRACE", 0.2)
    pidfile = tmp_path / "pids"
    with trio.fail_after(5):
        (leader, grandchild), took = await _cancel_once_started(
            f"trap '' TERM; sleep 100 & echo $$ $! > {pidfile}; wait", pidfile
        )
    assert 0.2 <= took < 1
    assert proc_state(leader) is None
    assert _not_running(grandchild)


async def test_orphans_that_are_ours_are_reaped(tmp_path: Path, subreaper: None) -> None:
    # As a subreaper (or a container's PID 1) the orphaned grandchild becomes our child: it
    # must be reaped too, or it stays a zombie for ever.
    pidfile = tmp_path / "pids"
    with trio.fail_after(5):
        (leader, grandchild), _ = await _cancel_once_started(
            f"sleep 100 & echo $$ $! > {pidfile}; wait", pidfile
        )
    assert proc_state(leader) is None
    assert proc_state(grandchild) is None


async def test_a_background_job_left_behind_is_terminated(tmp_path: Path) -> None:
    with trio.fail_after(5):
        result = await exec_("sleep 100 >/dev/null 2>&1 & echo $!")
    assert result.ok
    assert _not_running(int(result.stdout))


async def test_run_with_timeout_gives_op_timeout() -> None:
    with trio.fail_after(5), pytest.raises(OpTimeout, match=r"timed out after 0\.1 s"):
        await run_with_timeout(exec_(["sleep", "100"]), 0.1)
