"""The ``exec`` op: an external program, its output captured, its process group cleaned up.

Theory of operation. The program starts in a session (and process group) of its own
(``start_new_session=True``), so that everything it starts — a ``sh -c`` and its background
jobs — can be signalled at once with ``killpg``. Its output is read as it comes, by one task
per pipe: the first ``max_output`` bytes of each are kept and the rest is read and dropped, so
the program never blocks on a full pipe. The op ends when the program has exited and both
pipes are closed.

However the op ends — finished, failed or cancelled — nothing of the group is left behind
(docs/cancellation.md, promises 1 and 2): if any process of the group still runs, the group
gets SIGTERM, then SIGKILL if it still runs `TERMINATE_GRACE` seconds later; the program is
reaped, and so are the group's other processes when they are ours to reap (when triosip is
the container's PID 1 or a child subreaper, orphans are re-parented to it). Orphans of a
normal process are re-parented to init, which reaps them: they are dead, not running, once
the op returns.

We don't use `trio.run_process`: its capture is unbounded, and its default ``deliver_cancel``
signals only the program (not its group), after a `RuntimeWarning` that tests running with
warnings as errors turn into a failure.

When cancelled, the op raises `trio.Cancelled` wrapped in a `BaseExceptionGroup` (it runs its
pipe readers in a nursery): cancel scopes absorb it as usual; catch errors with ``except*``.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from triosip.ops._base import Op, OpFailed

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from trio.abc import ReceiveStream, SendStream

logger = logging.getLogger(__name__)

# Seconds between SIGTERM to a process group and SIGKILL to what is left of it.
TERMINATE_GRACE = 1.0
# The default bound on each of stdout and stderr, in bytes.
DEFAULT_MAX_OUTPUT = 1 << 20
# How often a terminating group is looked at for processes still running.
_GROUP_POLL = 0.01
_READ_CHUNK = 1 << 16
_PROC = Path("/proc")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecResult:
    """What a program did.

    Attributes:
        returncode: its exit status; ``-N`` when signal N ended it.
        stdout: the first ``max_output`` bytes it wrote to stdout.
        stderr: the first ``max_output`` bytes it wrote to stderr.
        truncated: whether it wrote more than that to either (the rest was dropped).
    """

    returncode: int
    stdout: bytes
    stderr: bytes
    truncated: bool

    @property
    def ok(self) -> bool:
        """Whether the program exited with status 0."""
        return self.returncode == 0

    @property
    def stdout_text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        """stderr decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stderr.decode("utf-8", errors="replace")


def exec_(
    command: Sequence[str] | str,
    *,
    stdin: bytes | str | None = None,
    env: Mapping[str, str] | None = None,
    max_output: int = DEFAULT_MAX_OUTPUT,
) -> Op[ExecResult]:
    """An op that runs an external program and captures its output.

    Args:
        command: the program and its arguments (no shell), or a str run by ``/bin/sh -c``.
        stdin: bytes (a str is sent as UTF-8) written to the program's stdin, which is then
            closed; None for no stdin (``/dev/null``).
        env: variables added to (or replacing) the proxy's environment for the program.
        max_output: how many bytes of each of stdout and stderr to keep.

    Returns:
        An op (kind ``"exec"``, described by the command line) whose result is the
        `ExecResult`, whatever the exit status. It ends when the program has exited and its
        stdout and stderr are closed (a background job that keeps them open keeps the op
        waiting); processes left running in its process group are then terminated.

    Raises:
        ValueError: an empty command, or a negative ``max_output``.
        OpFailed: (when run) the program could not be started (not found, not executable).
            With a str command the shell starts; a missing program is then exit status 127.
    """
    if isinstance(command, str):
        argv = ["/bin/sh", "-c", command]
        description = command
    else:
        argv = list(command)
        description = shlex.join(argv)
    if not argv or not argv[0]:
        raise ValueError("exec_() needs a command")
    if max_output < 0:
        raise ValueError(f"max_output must not be negative, not {max_output}")
    data = stdin.encode() if isinstance(stdin, str) else stdin
    full_env = None if env is None else {**os.environ, **env}
    return Op(
        "exec",
        description,
        lambda: _run(argv, description, stdin=data, env=full_env, max_output=max_output),
    )


class _Capture:
    """The kept head of one output pipe."""

    def __init__(self, limit: int) -> None:
        self.data = bytearray()
        self.limit = limit
        self.truncated = False

    async def drain(self, stream: ReceiveStream) -> None:
        # Read to the end even past the limit: a program blocked on a full pipe never exits.
        while chunk := await stream.receive_some(_READ_CHUNK):
            room = self.limit - len(self.data)
            if room > 0:
                self.data += chunk[:room]
            if len(chunk) > room:
                self.truncated = True


async def _feed(stream: SendStream, data: bytes) -> None:
    async with stream:  # closing stdin tells the program there is no more
        # A program may exit, or close its stdin, without reading it all.
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(data)


async def _run(
    argv: list[str],
    description: str,
    *,
    stdin: bytes | None,
    env: dict[str, str] | None,
    max_output: int,
) -> ExecResult:
    try:
        process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise OpFailed(
            "exec", description, f"can't run {argv[0]!r}: {exc.strerror or exc}"
        ) from exc
    assert process.stdout is not None
    assert process.stderr is not None
    stdout = _Capture(max_output)
    stderr = _Capture(max_output)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stdout.drain, process.stdout, name=f"exec {process.pid} stdout")
            nursery.start_soon(stderr.drain, process.stderr, name=f"exec {process.pid} stderr")
            if process.stdin is not None and stdin is not None:
                nursery.start_soon(_feed, process.stdin, stdin, name=f"exec {process.pid} stdin")
            await process.wait()
    finally:
        with trio.CancelScope(shield=True):
            await _end_process_group(process)
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    await pipe.aclose()
    assert process.returncode is not None
    return ExecResult(
        returncode=process.returncode,
        stdout=bytes(stdout.data),
        stderr=bytes(stderr.data),
        truncated=stdout.truncated or stderr.truncated,
    )


async def _end_process_group(process: trio.Process) -> None:
    """Make sure no process of the program's group runs any more, and reap what is ours."""
    group = process.pid  # start_new_session: the program leads its own group
    if process.returncode is None or _group_runs(group):
        logger.debug("exec %d: SIGTERM to its process group", group)
        _signal_group(group, signal.SIGTERM)
        with trio.move_on_after(TERMINATE_GRACE):
            await process.wait()
            # Nothing signals the end of processes that are not our children: poll.
            while _group_runs(group):  # noqa: ASYNC110
                await trio.sleep(_GROUP_POLL)
        if process.returncode is None or _group_runs(group):
            logger.warning(
                "exec %d: still running %g s after SIGTERM; SIGKILL to its process group",
                group,
                TERMINATE_GRACE,
            )
            _signal_group(group, signal.SIGKILL)
            await process.wait()
            # SIGKILL can't be ignored; a process in uninterruptible sleep takes a moment.
            with trio.move_on_after(TERMINATE_GRACE):
                while _group_runs(group):  # noqa: ASYNC110
                    await trio.sleep(_GROUP_POLL)
    _reap_group(group)


def _signal_group(group: int, signum: int) -> None:
    # Gone already (ESRCH), or only members we may not signal (EPERM on some systems).
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


def _group_runs(group: int) -> bool:
    """Whether a process of ``group`` still runs (zombies don't count)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not _PROC.is_dir():
        return True  # kill() also finds zombies; without /proc we can't tell them apart
    # Something is in the group, maybe only zombies that init has not reaped yet.
    with os.scandir(_PROC) as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_bytes()
            except OSError:
                continue  # exited while we looked
            # proc(5): "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses.
            fields = stat[stat.rindex(b")") + 2 :].split()
            if int(fields[2]) == group and fields[0] not in (b"Z", b"X"):
                return True
    return False


def _reap_group(group: int) -> None:
    """Reap the group's zombies that are our children (only once the leader is reaped)."""
    while True:
        try:
            pid, _ = os.waitpid(-group, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
