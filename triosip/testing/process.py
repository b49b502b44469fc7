"""Run ``triosip run`` as a real process, for tests: with ``--workers N`` or without.

`open_triosip` starts ``python -m triosip run ARGS`` on free ports of 127.0.0.1 (UDP and
TCP, and the MI), reads its log until it serves, and says where (`TriosipProcess`): the
shared listeners and the MI, which is the supervisor's with ``--workers N``. Leaving the
block kills it by PID and reaps it; its workers, which watch their supervisor, stop then.

Example::

    async with open_triosip(tmp_path, "--workers", "2", "--define", f"downstream={uas}") as p:
        result = await run_uac(..., remote_sending_address=p.udp.host_port)
        stats = p.mi_json("/stats")

Nothing in the rest of triosip imports this module.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from triosip.mi import MIClient
from triosip.transport import Address, parse_listen_spec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

__all__ = ["TriosipProcess", "open_triosip"]

_MI = re.compile(r"management interface on http://([^ ]+):(\d+)")
_LISTENING = re.compile(r"(?:listening on|workers serve) ((?:(?:udp|tcp):[^ ,]+(?:, )?)+)")


@dataclass(eq=False)
class TriosipProcess:
    """A ``triosip run`` process that serves.

    Attributes:
        process: the process (the supervisor, with ``--workers N``).
        listeners: its SIP listeners, with their real ports.
        mi: its MI's address.
        log: the lines of its standard error so far (its workers' too).
    """

    process: trio.Process
    listeners: tuple[Address, ...] = ()
    mi: tuple[str, int] | None = None
    log: list[str] = field(default_factory=list)
    _ready: trio.Event = field(default_factory=trio.Event)

    @property
    def udp(self) -> Address:
        """Its first UDP listener."""
        return next(a for a in self.listeners if a.transport == "udp")

    @property
    def tcp(self) -> Address:
        """Its first TCP listener."""
        return next(a for a in self.listeners if a.transport == "tcp")

    def mi_client(self) -> MIClient:
        """A client of its MI."""
        assert self.mi is not None
        return MIClient(*self.mi)

    async def mi_json(self, path: str, params: dict[str, str] | None = None) -> Any:
        """``GET path`` on its MI (in a thread: the client is synchronous)."""

        def get() -> Any:
            with self.mi_client() as client:
                return client.get_json(path, params)

        return await trio.to_thread.run_sync(get)

    async def mi_post(self, path: str) -> Any:
        """``POST path`` on its MI (``/reload``), and its JSON."""

        def post() -> Any:
            with self.mi_client() as client:
                return client.post_json(path)

        return await trio.to_thread.run_sync(post)

    async def mi_text(self, path: str) -> str:
        """``GET path`` on its MI, as text (``/metrics``)."""

        def get() -> str:
            with self.mi_client() as client:
                return client.get_text(path)

        return await trio.to_thread.run_sync(get)

    async def _read_log(self, stream: trio.abc.ReceiveStream) -> None:
        pending = b""
        while chunk := await stream.receive_some():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                self.log.append(line)
                self._parse(line)

    def _parse(self, line: str) -> None:
        mi = _MI.search(line)
        if mi is not None and (self.mi is None or "(all workers)" in line):
            self.mi = (mi.group(1), int(mi.group(2)))
        listening = _LISTENING.search(line)
        if listening is not None:
            specs = listening.group(1).split(", ")
            # A worker's listeners are the supervisor's: any line says where.
            self.listeners = tuple(parse_listen_spec(spec) for spec in specs)

    def text(self) -> str:
        """Its log so far, as one string."""
        return "\n".join(self.log)


@asynccontextmanager
async def open_triosip(
    cwd: Path, *args: str, ready_timeout: float = 20.0
) -> AsyncIterator[TriosipProcess]:
    """``triosip run ARGS --listen udp:127.0.0.1:0 --listen tcp:127.0.0.1:0 --mi
    127.0.0.1:0`` (the listeners only if ARGS names none), in `cwd`, with its database
    there too, serving for the duration of the block.

    Owns the process and the task that reads its standard error; leaving the block kills
    the process (SIGKILL, by PID) and reaps it.

    Args:
        cwd: the working folder (a test's ``tmp_path``).
        args: more ``triosip run`` options (``--workers 2``, a routes file...).
        ready_timeout: how long it may take to serve.

    Raises:
        TooSlowError: it did not serve within `ready_timeout` (or exited).
    """
    argv = [sys.executable, "-m", "triosip", "run", *args]
    if "--listen" not in args:
        argv += ["--listen", "udp:127.0.0.1:0", "--listen", "tcp:127.0.0.1:0"]
    if "--mi" not in args:
        argv += ["--mi", "127.0.0.1:0"]
    workers = "--workers" in args and args[args.index("--workers") + 1] != "1"
    env = {**os.environ, "TRIOSIP_DATA_DIR": str(cwd / "data")}
    process = await trio.lowlevel.open_process(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    running = TriosipProcess(process)
    try:
        async with trio.open_nursery() as nursery:
            assert process.stderr is not None
            nursery.start_soon(running._read_log, process.stderr, name="triosip log")
            with trio.fail_after(ready_timeout):
                while not _serves(running, workers):
                    if process.returncode is not None:
                        raise trio.TooSlowError(f"triosip exited:\n{running.text()}")
                    await trio.sleep(0.05)
            yield running
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
            await process.wait()


def _serves(running: TriosipProcess, workers: bool) -> bool:
    if not running.listeners or running.mi is None:
        return False
    if workers:
        return any("(all workers)" in line for line in running.log)
    return True
