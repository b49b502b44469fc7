"""One management interface for all workers: their MI documents merged (pure functions).

The supervisor asks each worker's own MI (loopback, a port of its own) and merges:
``/tasks`` and ``/transactions`` list every worker's transactions, each with a ``worker``
field, oldest first, cut to the query's ``limit``, and sum their summaries; ``/stats``
sums every counter and gauge (an op latency histogram sums bucket by bucket, which keeps
it cumulative), and says which worker is which; ``/metrics`` is the summed document in
Prometheus' format, plus a few series labelled ``worker``.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["merge_statistics", "merge_tasks", "worker_metrics"]

_COUNTS = ("methods", "states", "ops")
# Not sums: the fd limit every worker has, and the start of the oldest.
_LEAST = (("process", "max_fds"), ("process", "start_time_seconds"))
_SUMS = ("transactions", "matched", "ops_running", "launched")


def merge_statistics(documents: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``/stats`` document of all workers: every number summed, key by key.

    Args:
        documents: each worker's ``/stats`` document.

    Returns:
        A document of the same shape. Strings (the version) come from the first;
        ``uptime`` is the longest, the process's ``max_fds`` and ``start_time_seconds``
        the least; a part that is None in every worker (no database) stays None.
    """
    merged: dict[str, Any] = _sum(list(documents))
    if documents:
        merged["uptime"] = max(float(document["uptime"]) for document in documents)
    for section, key in _LEAST:
        values = [d[section][key] for d in documents if isinstance(d.get(section), dict)]
        if values:
            merged[section][key] = min(values)
    return merged


def _sum(values: list[Any]) -> Any:
    present = [value for value in values if value is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, bool | str):
        return first
    if isinstance(first, int | float):
        return sum(value for value in present if isinstance(value, int | float))
    if isinstance(first, dict):
        keys: dict[str, None] = {}
        for value in present:
            keys.update(dict.fromkeys(value))
        return {key: _sum([value.get(key) for value in present]) for key in keys}
    return first


def merge_tasks(documents: Mapping[int, Mapping[str, Any]], limit: int | None) -> dict[str, Any]:
    """The ``/tasks`` (or ``/transactions``) document of all workers.

    Args:
        documents: each worker's document, by worker index (asked with the same query).
        limit: the query's ``limit``: how many of the oldest transactions to keep; None
            for all.

    Returns:
        The transactions of every worker, each with its ``worker``, oldest first and cut
        to `limit`; the launched work of every worker likewise; the summaries summed
        (``shown`` is what the merged document shows). A ``summary=1`` document stays a
        summary alone.
    """
    summary: dict[str, Any] = {}
    shown = 0
    counts: dict[str, Counter[str]] = {}
    transactions: list[dict[str, Any]] = []
    launched: list[dict[str, Any]] = []
    has_entries = False
    for worker, document in sorted(documents.items()):
        part = document["summary"]
        shown += part.get("shown", 0)
        for key in _SUMS:
            if key in part:
                summary[key] = summary.get(key, 0) + part[key]
        for key in _COUNTS:
            if key in part:
                counts.setdefault(key, Counter()).update(part[key])
        if "transactions" in document:
            has_entries = True
            transactions.extend({**entry, "worker": worker} for entry in document["transactions"])
            launched.extend({**entry, "worker": worker} for entry in document.get("launched", ()))
    transactions.sort(key=_age, reverse=True)
    if limit:
        transactions = transactions[:limit]
    summary["shown"] = len(transactions) if has_entries else shown
    for key, counter in counts.items():
        summary[key] = dict(counter.most_common())
    if not has_entries:
        return {"summary": summary}
    merged: dict[str, Any] = {"transactions": transactions}
    if any("launched" in document for document in documents.values()):
        merged["launched"] = launched
    merged["summary"] = summary
    return merged


def _age(entry: Mapping[str, Any]) -> float:
    age = entry.get("age")
    return float(age) if isinstance(age, int | float) else 0.0


def worker_metrics(workers: Sequence[Mapping[str, Any]], restarts: int) -> str:
    """The supervisor's own Prometheus series: the workers, and how often one was replaced.

    Args:
        workers: one entry per worker: ``index``, ``pid`` (None while it is down) and,
            for a worker that answered, its ``/stats`` document as ``stats``.
        restarts: how many times a worker that died was started again.

    Returns:
        Prometheus text: ``triosip_worker_up``, ``triosip_worker_transactions_active``
        (labelled ``worker``) and ``triosip_worker_restarts_total``.
    """
    lines = [
        "# HELP triosip_worker_up Whether the worker process runs and answers its MI.",
        "# TYPE triosip_worker_up gauge",
    ]
    for worker in workers:
        up = 1 if worker.get("stats") is not None else 0
        lines.append(f'triosip_worker_up{{worker="{worker["index"]}"}} {up}')
    lines += [
        "# HELP triosip_worker_transactions_active Proxied transactions running now, per worker.",
        "# TYPE triosip_worker_transactions_active gauge",
    ]
    for worker in workers:
        stats = worker.get("stats")
        if stats is not None:
            active = stats["proxy"]["transactions_active"]
            lines.append(
                f'triosip_worker_transactions_active{{worker="{worker["index"]}"}} {active}'
            )
    lines += [
        "# HELP triosip_worker_restarts_total Worker processes started again after they died.",
        "# TYPE triosip_worker_restarts_total counter",
        f"triosip_worker_restarts_total {restarts}",
    ]
    return "\n".join(lines) + "\n"
