"""What the tests of ops (and of routes that run them) share: a long sqlite query, and a
poll for what no trio event tells."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

# About 2.5 s of sqlite work on this machine (10 times more with six at once on its two
# cores): far beyond any bound the tests set, so a query that is not interrupted fails them;
# yet short, because a cancel that does not interrupt it waits for it, shielded, where the
# test's fail_after can't cut the wait short (10**9 rows would hang a broken run for minutes).
LONG_QUERY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000) "
    "SELECT count(*) AS n FROM c"
)


async def wait_until(condition: Callable[[], object], poll: float = 0.001) -> None:
    """Wait until `condition()` holds; callers bound the wait with a ``fail_after``."""
    # What we wait for happens in another process, a thread or the kernel: no event tells.
    while not condition():  # noqa: ASYNC110
        await trio.sleep(poll)
