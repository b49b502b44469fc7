"""``triosip run --pid-file PATH``: the proxy's PID in a file, for init scripts and
``kill -HUP $(cat PATH)``-style tooling, removed when the proxy ends.

The file is written before the proxy starts (atomically: a temporary file renamed over
it), and refused when it names a process that is still alive: a second proxy started by
mistake says so in one line instead of taking over the first one's file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from triosip.errors import TriosipError

__all__ = ["PidFileError", "remove_pid_file", "write_pid_file"]


class PidFileError(TriosipError):
    """The PID file can't be written, or names a live process (one line says which)."""


def write_pid_file(path: str | Path) -> None:
    """Write this process's PID to `path`.

    Raises:
        PidFileError: `path` names a live process, or cannot be written.
    """
    path = Path(path)
    running = _pid_in(path)
    if running is not None and running != os.getpid() and _alive(running):
        raise PidFileError(f"--pid-file {path}: triosip runs already as PID {running}")
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        temporary.write_text(f"{os.getpid()}\n")
        temporary.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise PidFileError(f"--pid-file {path}: {exc.strerror or exc}") from None


def remove_pid_file(path: str | Path) -> None:
    """Remove `path` if it still holds this process's PID."""
    path = Path(path)
    if _pid_in(path) == os.getpid():
        with contextlib.suppress(OSError):
            path.unlink()


def _pid_in(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isascii() and text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True
