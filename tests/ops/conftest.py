"""Every ops test must leave nothing behind: no fd, no child process, no worker thread."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from triosip.testing.postgres import NoPostgres, shared_server

from .helpers import child_pids, open_fds, triosip_threads

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    # A sync fixture: it is set up before trio.run starts and torn down after it ends, so
    # trio's own fds (epoll, wakeup socket) are not in either snapshot.
    fds_before = open_fds()
    children_before = child_pids()
    yield
    leaked = {fd: target for fd, target in open_fds().items() if fds_before.get(fd) != target}
    assert leaked == {}, f"fds left open: {leaked}"
    assert child_pids() - children_before == set(), "child processes left behind"
    assert triosip_threads() == [], "worker threads still running"


@pytest.fixture
def pg_url() -> str:
    """The test server's URL (started on first use); a failure, not a skip, without one."""
    try:
        return shared_server().url
    except NoPostgres as exc:
        pytest.fail(str(exc), pytrace=False)
