"""The ``/tasks`` and ``/transactions`` documents of a live proxy, built a slice at a time.

Theory of operation
-------------------
Sampling a transaction (walking its task tree, joining in its branches and ops), turning
it into a document and that into JSON costs about a tenth of a millisecond. Done for
every live transaction in one synchronous step, it held the trio loop ~130 ms per 1,000
transactions, and every SIP message waited meanwhile. Here the work goes in slices: the
listing is counted `COUNT_SLICE` transactions at a time, and the entries are sampled,
built and JSON-encoded `SLICE` transactions at a time, each slice in one synchronous
step, with a checkpoint (`trio.lowlevel.checkpoint`) between two slices, so that the
proxy runs in between and no stretch without a checkpoint grows with the number of
transactions.

Everything comes from the proxy's inspection interface (`triosip.proxy.inspection`). What
a document is then: the transactions are listed at one instant (a copy of the layer's
list, oldest first); one that starts later is not in it. Each entry is sampled
in one step, so it is self-consistent: its state, timers, tasks and branches are of one
instant, and its ages are relative to that instant. Two entries of different slices may
be of instants some milliseconds apart, and a transaction that ended in between is left
out (``shown`` counts the entries there are). The summary's counts by method and state
are of the listing, each read when its slice was counted; its ops are those running
when the last slice was done.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

import trio

from triosip.mi._inspect import sample_launched, sample_some
from triosip.mi._tasks import (
    launched_entry,
    summary_fields,
    transaction_entry,
    transaction_row,
)
from triosip.ops import op_accounting

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from triosip.mi._tasks import TaskQuery, TransactionSample
    from triosip.proxy.inspection import Listed, ProxyInspection

SLICE = 20
"""Transactions sampled, built and encoded between two checkpoints (~2 ms of work here):
each checkpoint lets every task that is ready run, so a SIP message that needs a few
hops between tasks waits about this much per hop."""
COUNT_SLICE = 1000
"""Transactions filtered and counted between two checkpoints (~1 ms)."""


async def tasks_document(
    inspection: ProxyInspection,
    query: TaskQuery,
    launched_tasks: Callable[[], Iterable[trio.lowlevel.Task]],
) -> bytes:
    """The ``GET /tasks`` document (`triosip.mi.task_tree`'s shape) as JSON, built a
    slice at a time (module doc).

    Args:
        inspection: the running proxy's inspection interface (`Proxy.inspect`).
        query: which transactions, how many, or only the summary.
        launched_tasks: the tasks of ``launch()``ed work now (the script environment's).

    Returns:
        The JSON text, encoded, with a final newline.
    """
    listing = await _Listing.take(inspection, query)
    entries, shown = await _entries(inspection, listing, query, transaction_entry)
    accounting = op_accounting()
    launched = sample_launched(launched_tasks(), accounting)
    summary = summary_fields(
        transactions=listing.total,
        matched=len(listing.matched),
        shown=shown,
        methods=listing.methods,
        states=listing.states,
        ops=Counter(op.kind for op in accounting.running.values()),
        launched=len(launched),
    )
    if query.summary:
        return _encode({"summary": summary}).encode() + b"\n"
    now = trio.current_time()
    launched_nodes = [] if query.filters else [launched_entry(task, now) for task in launched]
    text = (
        f'{{"transactions":[{entries}],"launched":{_encode(launched_nodes)},'
        f'"summary":{_encode(summary)}}}\n'
    )
    return text.encode()


async def transactions_document(inspection: ProxyInspection, query: TaskQuery) -> bytes:
    """The ``GET /transactions`` document (`triosip.mi.transaction_table`'s shape) as
    JSON, built a slice at a time (module doc).

    Returns:
        The JSON text, encoded, with a final newline.
    """
    listing = await _Listing.take(inspection, query)
    entries, shown = await _entries(inspection, listing, query, transaction_row)
    summary = summary_fields(
        transactions=listing.total,
        matched=len(listing.matched),
        shown=shown,
        methods=listing.methods,
        states=listing.states,
    )
    if query.summary:
        return _encode({"summary": summary}).encode() + b"\n"
    return f'{{"transactions":[{entries}],"summary":{_encode(summary)}}}\n'.encode()


class _Listing:
    """The transactions at one instant, those the query matches, and their counts."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.matched: list[Listed] = []
        self.shown: list[Listed] = []
        self.methods: Counter[str] = Counter()
        self.states: Counter[str] = Counter()

    @classmethod
    async def take(cls, inspection: ProxyInspection, query: TaskQuery) -> _Listing:
        servers = inspection.listing()  # oldest first
        listing = cls(len(servers))
        matches = query.matches_fields
        for start in range(0, len(servers), COUNT_SLICE):
            now = trio.current_time()
            for entry in servers.entries(start, start + COUNT_SLICE):
                if matches(entry.call_id, entry.method, entry.created_at, now):
                    listing.matched.append(entry)
                    listing.methods[entry.method] += 1
                    listing.states[entry.state] += 1
            await trio.lowlevel.checkpoint()
        limit = query.limit
        listing.shown = listing.matched if limit is None else listing.matched[:limit]
        return listing


async def _entries(
    inspection: ProxyInspection,
    listing: _Listing,
    query: TaskQuery,
    build: Callable[[TransactionSample, float], dict[str, Any]],
) -> tuple[str, int]:
    """The JSON entries of the listing's shown transactions joined by commas, and how
    many there are (those that ended meanwhile are left out)."""
    if query.summary:
        return "", 0
    servers = listing.shown
    accounting = op_accounting()
    parts: list[str] = []
    count = 0
    for start in range(0, len(servers), SLICE):
        # One synchronous step per slice: each entry is of one instant (module doc).
        now = trio.current_time()
        samples = sample_some(inspection, servers[start : start + SLICE], accounting)
        if samples:
            parts.append(_encode([build(sample, now) for sample in samples])[1:-1])
            count += len(samples)
        await trio.lowlevel.checkpoint()
    return ",".join(parts), count


def _encode(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"), allow_nan=False)
