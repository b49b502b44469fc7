"""How long the trio loop was held by one task step: a route that blocks (``time.sleep``,
a blocking socket, a CPU loop) holds the whole proxy while it runs."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Iterator


class StallWatch(trio.abc.Instrument):
    """A trio instrument that keeps the longest task step it saw, and its task's name.

    A step is what a task runs between two checkpoints, with every other task waiting:
    a step of 300 ms is a proxy that answered nothing for 300 ms.
    """

    def __init__(self) -> None:
        self.longest = 0.0
        self.task = ""
        self._step: tuple[trio.lowlevel.Task, float] | None = None

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._step = (task, time.perf_counter())

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        # The step that installed the instrument had no "before": it is not measured.
        if self._step is None or self._step[0] is not task:
            return
        took = time.perf_counter() - self._step[1]
        self._step = None
        if took > self.longest:
            self.longest, self.task = took, task.name


@contextlib.contextmanager
def watching() -> Iterator[StallWatch]:
    """A `StallWatch`, installed in the current trio run for the block."""
    watch = StallWatch()
    trio.lowlevel.add_instrument(watch)
    try:
        yield watch
    finally:
        trio.lowlevel.remove_instrument(watch)
