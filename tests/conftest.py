"""Fixtures for every test directory."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from triosip.testing.leaks import leak_check
from triosip.testing.postgres import NoPostgres, shared_server

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def nothing_left_behind() -> Iterator[None]:
    """The test leaves no fd open, no child process and no worker thread, once its trio
    run has ended. Sync, so that trio's own fds are in neither snapshot; modules (or a
    directory's conftest) ask for it by name."""
    with leak_check():
        yield


@pytest.fixture
def pg_url() -> str:
    """The test PostgreSQL server's URL (started on first use); a failure, not a skip,
    when there is none."""
    try:
        return shared_server().url
    except NoPostgres as exc:
        pytest.fail(str(exc), pytrace=False)
