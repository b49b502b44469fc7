"""Fixtures for every test directory."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.support.leaks import leak_check

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def nothing_left_behind() -> Iterator[None]:
    """The test leaves no fd open, no child process and no worker thread, once its trio
    run has ended. Sync, so that trio's own fds are in neither snapshot; modules (or a
    directory's conftest) ask for it by name."""
    with leak_check():
        yield
