"""Every ops test must leave nothing behind: no fd, no child process, no worker thread."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _every_test_leaves_nothing(nothing_left_behind: None) -> None:
    """The root conftest's leak check, for each test of this directory."""
