"""Every ops test must leave nothing behind: no fd, no child process, no worker thread."""

from __future__ import annotations

import pytest

from triosip.testing.postgres import NoPostgres, shared_server


@pytest.fixture(autouse=True)
def _every_test_leaves_nothing(nothing_left_behind: None) -> None:
    """The root conftest's leak check, for each test of this directory."""


@pytest.fixture
def pg_url() -> str:
    """The test server's URL (started on first use); a failure, not a skip, without one."""
    try:
        return shared_server().url
    except NoPostgres as exc:
        pytest.fail(str(exc), pytrace=False)
