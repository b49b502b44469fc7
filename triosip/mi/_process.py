"""The proxy process's own figures: CPU seconds, resident memory, open files, start time.

They are what prometheus-client's process collector exports (``process_cpu_seconds_total``,
``process_resident_memory_bytes``, ``process_open_fds``, ``process_max_fds``,
``process_start_time_seconds``), read the same way: from ``/proc/self`` on Linux. Where
``/proc`` is missing (another system), the figures it alone gives are None and left out.
Reading them costs a few system calls per ``GET /stats``, nothing per message.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessStatistics:
    """What the process uses now.

    Attributes:
        cpu_seconds: user and system CPU time spent so far.
        resident_memory_bytes: resident set size (RSS); None without ``/proc``.
        open_fds: file descriptors open now; None without ``/proc``.
        max_fds: the soft limit of open file descriptors (``ulimit -n``).
        start_time_seconds: when the process started, in seconds since the Unix epoch.
    """

    cpu_seconds: float
    resident_memory_bytes: int | None
    open_fds: int | None
    max_fds: int
    start_time_seconds: float


def process_statistics(*, fallback_start: float) -> ProcessStatistics:
    """The figures of this process now.

    Args:
        fallback_start: the start time to report where ``/proc`` cannot say (Unix time).
    """
    times = os.times()
    return ProcessStatistics(
        cpu_seconds=round(times.user + times.system, 3),
        resident_memory_bytes=_resident_bytes(),
        open_fds=_open_fds(),
        max_fds=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        start_time_seconds=_start_time() or fallback_start,
    )


def _resident_bytes() -> int | None:
    try:
        # statm: size resident shared text lib data dt, in pages.
        return int((_PROC / "self" / "statm").read_text().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


def _open_fds() -> int | None:
    try:
        return len(os.listdir(_PROC / "self" / "fd"))
    except OSError:
        return None


def _start_time() -> float | None:
    """As prometheus-client reads it: boot time (``btime`` of /proc/stat) plus field 22 of
    /proc/self/stat (clock ticks after boot); the command name before it may hold spaces."""
    try:
        stat = (_PROC / "self" / "stat").read_text()
        ticks = int(stat.rpartition(")")[2].split()[19])
        for line in (_PROC / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return round(int(line.split()[1]) + ticks / _TICKS, 2)
    except (OSError, IndexError, ValueError):
        pass
    return None
