"""How long the trio loop was held by one task step: a route that blocks (``time.sleep``,
a blocking socket, a CPU loop) holds the whole proxy while it runs."""

from __future__ import annotations

import contextlib
import gc
import time
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Iterator


class StallWatch(trio.abc.Instrument):
    """A trio instrument that keeps the longest task step it saw, and its task's name.

    A step is what a task runs between two checkpoints, with every other task waiting:
    a step of 300 ms is a proxy that answered nothing for 300 ms. The collector's pauses
    within a step are left out: they are the process's, not the route's.
    """

    def __init__(self) -> None:
        self.longest = 0.0
        self.task = ""
        self._step: tuple[trio.lowlevel.Task, float] | None = None
        self._collecting = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._step = (task, time.perf_counter())

    def collector(self, phase: str, _info: dict[str, int]) -> None:
        """A `gc.callbacks` entry: move the step's start past the collection."""
        if phase == "start":
            self._collecting = time.perf_counter()
        elif self._step is not None:
            task, started = self._step
            self._step = (task, started + time.perf_counter() - self._collecting)

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
    gc.callbacks.append(watch.collector)
    try:
        yield watch
    finally:
        gc.callbacks.remove(watch.collector)
        trio.lowlevel.remove_instrument(watch)
