"""Leak probes: what this process holds (tasks, worker threads, child processes, fds),
read from trio and /proc, and the check that a test left none of it.

`leak_check` is the body of the ``triosip_no_leaks`` fixture of the pytest plugin
(`triosip.testing.plugin`) and of the test suite's ``nothing_left_behind``; tests that
check within their trio run (before resources they own close), and ``triosip check``'s
drill, take a `Resources` snapshot and compare.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


def triosip_threads() -> list[str]:
    """Worker threads running triosip work now (trio renames idle cached threads)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("triosip")]


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when it is gone (reaped)."""
    fields = _stat(pid)
    return None if fields is None else (fields[0], int(fields[1]))


def process_exists(pid: int) -> bool:
    """Whether /proc knows `pid` (a zombie too)."""
    return Path(f"/proc/{pid}").exists()


def task_names(root: trio.lowlevel.Task | None = None) -> Counter[str]:
    """The names of every task of this trio run, from the root task down (or from `root`,
    itself included)."""
    names: Counter[str] = Counter()
    top = root or trio.lowlevel.current_root_task()
    assert top is not None
    stack = [top]
    while stack:
        task = stack.pop()
        names[task.name] += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return names


def busy_threads() -> Counter[str]:
    """The names of the threads that run something: every one but trio's idle cached
    workers, which trio names back to "Trio thread N" once they have returned."""
    return Counter(t.name for t in threading.enumerate() if not t.name.startswith("Trio thread "))


def child_pids() -> set[int]:
    """This process's children, zombies included (proc(5) ``task/*/children``)."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            pids.update(int(pid) for pid in (task / "children").read_text().split())
    return pids


def open_fds() -> dict[str, str]:
    """This process's open fds and what they point to."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the fd listdir itself used
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return fds


def _stat(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # proc(5): "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses.
    return stat[stat.rindex(")") + 2 :].split()


def running(pid: int) -> bool:
    """Whether `pid` runs: not gone, and not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def group_running(group: int) -> list[int]:
    """The processes of process group `group` that still run (zombies don't count)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and int(fields[2]) == group and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


@dataclass(frozen=True)
class Resources:
    """What the process holds at one moment; take one inside the trio run."""

    tasks: Counter[str]
    threads: Counter[str]
    children: set[int]
    fds: dict[str, str]

    @classmethod
    def now(cls) -> Resources:
        """What the process holds now (call it inside the trio run)."""
        return cls(task_names(), busy_threads(), child_pids(), open_fds())

    def left_since(self, before: Resources) -> dict[str, Any]:
        """What is here now and was not in `before`; empty when nothing was left behind."""
        left: dict[str, Any] = {
            "tasks": sorted((self.tasks - before.tasks).elements()),
            "threads": sorted((self.threads - before.threads).elements()),
            "children": sorted(self.children - before.children),
            "fds": {fd: target for fd, target in self.fds.items() if before.fds.get(fd) != target},
        }
        return {what: items for what, items in left.items() if items}


async def wait_until(condition: Callable[[], object], poll: float = 0.001) -> None:
    """Wait until `condition()` holds; callers bound the wait with a ``fail_after``."""
    # What we wait for happens in another process, a thread or the kernel: no event tells.
    while not condition():  # noqa: ASYNC110
        await trio.sleep(poll)


@contextlib.contextmanager
def leak_check() -> Iterator[None]:
    """Check that the block leaves no fd open, no child process and no worker thread.

    Use it around a whole trio run (a sync fixture), so that trio's own fds are in
    neither snapshot.
    """
    fds_before = open_fds()
    children_before = child_pids()
    threads_before = busy_threads()
    yield
    leaked = {fd: target for fd, target in open_fds().items() if fds_before.get(fd) != target}
    assert leaked == {}, f"fds left open: {leaked}"
    assert child_pids() - children_before == set(), "child processes left behind"
    assert triosip_threads() == [], "triosip worker threads still running"
    assert busy_threads() - threads_before == Counter(), "worker threads still running"
