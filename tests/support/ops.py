"""What the tests of ops (and of routes that run them) share: a long sqlite query, and
the poll for what no trio event tells (`triosip.testing.leaks.wait_until`)."""

from __future__ import annotations

from triosip.testing.leaks import wait_until as wait_until

# About 2.5 s of sqlite work on this machine (10 times more with six at once on its two
# cores): far beyond any bound the tests set, so a query that is not interrupted fails them;
# yet short, because a cancel that does not interrupt it waits for it, shielded, where the
# test's fail_after can't cut the wait short (10**9 rows would hang a broken run for minutes).
LONG_QUERY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000) "
    "SELECT count(*) AS n FROM c"
)
