"""Fixtures of the cancellation tests. Not autouse: test_api.py and test_launch.py, beside
these, have their own; the cancellation modules ask for `nothing_left_after_run` by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .helpers import busy_threads, child_pids, open_fds

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def nothing_left_after_run() -> Iterator[None]:
    """A backstop to the in-run checks: once trio.run has ended, no child process, worker
    thread or fd of the test is left. Sync, so that trio's own fds are in neither snapshot."""
    fds_before = open_fds()
    children_before = child_pids()
    threads_before = busy_threads()
    yield
    leaked = {fd: target for fd, target in open_fds().items() if fds_before.get(fd) != target}
    assert leaked == {}, f"fds left open: {leaked}"
    assert child_pids() - children_before == set(), "child processes left behind"
    assert busy_threads() - threads_before == {}, "worker threads still running"
