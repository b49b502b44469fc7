"""The task tree and the transaction table, as JSON documents, from plain samples.

Theory of operation
-------------------
``triosip tasks`` shows what runs, and what runs is trio's own task tree: each server
transaction is a task (named "IST INVITE z9hG4bK..."), and under it, in its nurseries,
the tasks of its async ops ("op db SELECT ..."), its branches ("branch udp:10.0.0.2:5060
z9hG4bK...") and the CANCELs it sends. `_inspect.py` walks those live objects once and
synchronously, so that the snapshot is of one instant, and joins each task with what the
tables know of it (the transaction's request and timers, the op a task runs, the branch
and client transaction a task drives) into the frozen samples below.

The functions here turn samples into the documents the MI serves. They are pure: no trio,
no clock (``now`` is an argument, in `trio.current_time` units), so tests feed them
hand-made samples. Times in the documents are relative to ``now``: an ``age`` in seconds,
and a ``deadline_in`` (seconds until the deadline that fails the thing: an op's timeout,
a branch's fr timer) that ``triosip tasks`` uses to turn an age red.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

# What each RFC 3261 §17 timer does when it fires (Table 4; RFC 6026 for L and M).
_SERVER_TIMER_ACTIONS = {
    "G": "retransmit {status}",  # §17.2.1
    "H": "give up waiting for the ACK, terminate",  # §17.2.1
    "I": "terminate (ACK retransmissions absorbed)",  # §17.2.1
    "J": "terminate (request retransmissions absorbed)",  # §17.2.2
    "L": "terminate (Accepted)",  # RFC 6026 §8.7
}
_CLIENT_TIMER_ACTIONS = {
    "A": "retransmit {method}",  # §17.1.1.2
    "B": "408: no answer",  # §17.1.1.2
    "D": "terminate (response retransmissions absorbed)",  # §17.1.1.2
    "E": "retransmit {method}",  # §17.1.2.2
    "F": "408: no answer",  # §17.1.2.2
    "K": "terminate (response retransmissions absorbed)",  # §17.1.2.2
    "M": "terminate (Accepted)",  # RFC 6026 §8.4
}
# The client timers whose firing fails the branch (the others retransmit or clean up).
_FAILING_CLIENT_TIMERS = ("B", "F")

# Ages and durations are rounded to the millisecond: trio's clock has more digits than
# anyone reads.
_DIGITS = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class OpSample:
    """An async op that runs now (`triosip.ops.Op`).

    Attributes:
        kind: ``"db"``, ``"rest"``, ``"exec"``, ``"sleep"``, ``"thread"``...
        description: what it waits on: the SQL, ``"GET http://..."``, the argv.
        started_at: when it started (`trio.current_time`).
        timeout: its own time limit in seconds, if it runs under one.
    """

    kind: str
    description: str
    started_at: float
    timeout: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSample:
    """A client transaction (RFC 3261 §17.1) that a task runs.

    Attributes:
        name: ``"ICT INVITE z9hG4bK..."``.
        method: the request's method.
        state: the machine's state as the RFC writes it (``"Proceeding"``).
        created_at: when it started.
        retransmissions: how many times the request went out again (Timer A/E).
        last_status: the status of the last response received, if any.
        timers: the armed timers, letter -> deadline.
    """

    name: str
    method: str
    state: str
    created_at: float
    retransmissions: int = 0
    last_status: int | None = None
    timers: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class BranchSample:
    """One branch of a proxied transaction (RFC 3261 §16.6), from the transaction table.

    Attributes:
        index: 0 for the first branch.
        branch: the branch parameter of our Via.
        destination: where it went (``"udp:10.0.0.2:5060"``), None before it was resolved.
        provisional: whether a provisional response came.
        cancel_sent: whether we CANCELled it.
        ended: whether its task has ended.
        status: the final response's status, if one came (or was made up locally).
        fr_deadline: when its fr timer (fr_timeout, or fr_inv_timeout after a provisional
            response) fires; ``inf`` when none runs.
    """

    index: int
    branch: str
    destination: str | None
    provisional: bool = False
    cancel_sent: bool = False
    ended: bool = False
    status: int | None = None
    fr_deadline: float = math.inf


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSample:
    """A trio task and what the tables say it does.

    Attributes:
        name: the task's name.
        op: the op it runs now, if any.
        client: the client transaction it runs, if any.
        branch: the branch it belongs to, if any.
        waiting_in: the innermost function it awaits in, outside trio
            (``"triosip.ops._sleep.sleep.<locals>.run:60"``).
        children: the tasks of its nurseries.
    """

    name: str
    op: OpSample | None = None
    client: ClientSample | None = None
    branch: BranchSample | None = None
    waiting_in: str | None = None
    children: tuple[TaskSample, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionSample:
    """A server transaction (RFC 3261 §17.2), and the proxy's side of it if it has one.

    Attributes:
        name: ``"IST INVITE z9hG4bK..."``, also its task's name.
        method: the request's method.
        ruri: the Request-URI as it came.
        call_id: the Call-ID.
        branch: the request's top Via branch.
        state: the machine's state as the RFC writes it.
        source: where the request came from.
        created_at: when it was made.
        last_status: the status of the last response sent (the 100 Trying included).
        final_status: the status of the final response sent, if any.
        timers: the server transaction's armed timers, letter -> deadline.
        proxied: whether the proxy runs routes for it (a CANCEL is answered at once).
        cancelled: whether a CANCEL matched it.
        route_deadline: while the request route runs before any branch, the deadline of
            its fr_timeout; None otherwise.
        failure_route: the name of the armed failure route, if any.
        branches: its branches, from the proxy's table.
        task: its task and the tasks under it; None before the task has started.
    """

    name: str
    method: str
    ruri: str
    call_id: str
    branch: str
    state: str
    source: str
    created_at: float
    last_status: int | None = None
    final_status: int | None = None
    timers: Mapping[str, float] = field(default_factory=dict)
    proxied: bool = False
    cancelled: bool = False
    route_deadline: float | None = None
    failure_route: str | None = None
    branches: tuple[BranchSample, ...] = ()
    task: TaskSample | None = None


class QueryError(ValueError):
    """A query parameter the MI can't use; ``str()`` says which and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskQuery:
    """Which transactions to show (``triosip tasks --call-id X --older-than S --method M``),
    and how many.

    Attributes:
        call_id: only the transactions of this Call-ID.
        method: only those of this method (any case).
        older_than: only those at least this many seconds old.
        limit: at most this many of those that match, the oldest; all when None.
        summary: only the summary (counts), no entry per transaction.
    """

    call_id: str | None = None
    method: str | None = None
    older_than: float | None = None
    limit: int | None = None
    summary: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, Sequence[str]]) -> TaskQuery:
        """The query of a URL's parameters
        (``?call_id=X&older_than=2&method=invite&limit=50&summary=1``).

        Raises:
            QueryError: an unknown parameter, one given twice, or a bad number.
        """
        unknown = sorted(set(params) - set(_PARAMETERS))
        if unknown:
            raise QueryError(
                f"unknown parameter {unknown[0]!r}: use call_id, method, older_than, limit "
                "or summary"
            )
        values: dict[str, str] = {}
        for name, given in params.items():
            if len(given) != 1:
                raise QueryError(f"parameter {name!r} given {len(given)} times")
            values[name] = given[0]
        older_than: float | None = None
        if "older_than" in values:
            try:
                older_than = float(values["older_than"])
            except ValueError:
                older_than = math.nan
            if not 0 <= older_than < math.inf:
                raise QueryError(
                    f"older_than must be a number of seconds >= 0, not {values['older_than']!r}"
                )
        limit: int | None = None
        if "limit" in values:
            text = values["limit"]
            if not text.isdigit() or len(text) > _LIMIT_DIGITS:
                raise QueryError(f"limit must be a whole number >= 0, not {text!r}")
            limit = int(text)
        summary = values.get("summary", "0").lower()
        if summary not in _BOOLEANS:
            raise QueryError(f"summary must be 1 or 0, not {values['summary']!r}")
        method = values.get("method")
        return cls(
            call_id=values.get("call_id"),
            method=method.upper() if method else None,
            older_than=older_than,
            limit=limit,
            summary=_BOOLEANS[summary],
        )

    @property
    def filters(self) -> bool:
        """Whether it filters (by Call-ID, method or age): launched work, which belongs
        to no transaction, shows only when it does not."""
        return self.call_id is not None or self.method is not None or self.older_than is not None

    def matches(self, transaction: TransactionSample, now: float) -> bool:
        """Whether `transaction` passes every filter given."""
        return self.matches_fields(
            transaction.call_id, transaction.method, transaction.created_at, now
        )

    def matches_fields(self, call_id: str, method: str, created_at: float, now: float) -> bool:
        """Whether a transaction of this Call-ID and method, made at `created_at`, passes
        every filter given."""
        if self.call_id is not None and call_id != self.call_id:
            return False
        if self.method is not None and method.upper() != self.method:
            return False
        return self.older_than is None or now - created_at >= self.older_than


_PARAMETERS = ("call_id", "method", "older_than", "limit", "summary")
_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
# A limit is a count of transactions: 18 digits bound int() and any real count.
_LIMIT_DIGITS = 18


def summary_fields(
    *,
    transactions: int,
    matched: int,
    shown: int,
    methods: Mapping[str, int],
    states: Mapping[str, int],
    ops: Mapping[str, int] | None = None,
    launched: int | None = None,
) -> dict[str, Any]:
    """The ``summary`` of a ``/tasks`` or ``/transactions`` document.

    Args:
        transactions: how many transactions live, in all.
        matched: how many of them pass the query's filters.
        shown: how many entries the document has (``limit`` of the matched, oldest first).
        methods: the matched ones by method.
        states: the matched ones by state.
        ops: the ops running in the whole proxy, by kind (``/tasks`` only).
        launched: how many ``launch()``ed tasks run (``/tasks`` only).

    Returns:
        ``{"transactions": ..., "matched": ..., "shown": ..., "methods": {...},
        "states": {...}}``, and for ``/tasks`` ``"ops_running"``, ``"ops"`` and
        ``"launched"``; counts by name, most first.
    """
    summary: dict[str, Any] = {
        "transactions": transactions,
        "matched": matched,
        "shown": shown,
        "methods": _by_count(methods),
        "states": _by_count(states),
    }
    if ops is not None:
        summary["ops_running"] = sum(ops.values())
        summary["ops"] = _by_count(ops)
    if launched is not None:
        summary["launched"] = launched
    return summary


def task_tree(
    transactions: Sequence[TransactionSample],
    launched: Sequence[TaskSample],
    *,
    now: float,
    query: TaskQuery | None = None,
) -> dict[str, Any]:
    """The ``GET /tasks`` document: every transaction with the tasks under it, oldest
    first, and the launched work under a root of its own.

    Args:
        transactions: the live server transactions.
        launched: the tasks of ``launch()``ed work.
        now: the time the samples were taken.
        query: which transactions to show, and how many; all when None. Launched work
            belongs to no transaction, so only a query without filters shows it.

    Returns:
        ``{"transactions": [...], "launched": [...], "summary": {...}}`` (`summary_fields`),
        JSON-able; only the summary for a summary query.
    """
    query = query or TaskQuery()
    matched = _oldest_first(tx for tx in transactions if query.matches(tx, now))
    shown = matched if query.limit is None else matched[: query.limit]
    ops = Counter(op.kind for tx in transactions if tx.task is not None for op in _ops(tx.task))
    ops.update(op.kind for task in launched for op in _ops(task))
    summary = summary_fields(
        transactions=len(transactions),
        matched=len(matched),
        shown=0 if query.summary else len(shown),
        methods=Counter(tx.method for tx in matched),
        states=Counter(tx.state for tx in matched),
        ops=ops,
        launched=len(launched),
    )
    if query.summary:
        return {"summary": summary}
    return {
        "transactions": [transaction_entry(tx, now) for tx in shown],
        "launched": [] if query.filters else [launched_entry(task, now) for task in launched],
        "summary": summary,
    }


def transaction_table(
    transactions: Sequence[TransactionSample], *, now: float, query: TaskQuery | None = None
) -> dict[str, Any]:
    """The ``GET /transactions`` document: one row per transaction, with its branches,
    oldest first, and no tasks.

    Returns:
        ``{"transactions": [...], "summary": {...}}`` (`summary_fields`), JSON-able;
        only the summary for a summary query.
    """
    query = query or TaskQuery()
    matched = _oldest_first(tx for tx in transactions if query.matches(tx, now))
    shown = matched if query.limit is None else matched[: query.limit]
    summary = summary_fields(
        transactions=len(transactions),
        matched=len(matched),
        shown=0 if query.summary else len(shown),
        methods=Counter(tx.method for tx in matched),
        states=Counter(tx.state for tx in matched),
    )
    if query.summary:
        return {"summary": summary}
    return {"transactions": [transaction_row(tx, now) for tx in shown], "summary": summary}


def transaction_entry(tx: TransactionSample, now: float) -> dict[str, Any]:
    """The entry of one transaction in ``/tasks``: its fields and the tasks under it."""
    return _transaction_node(tx, now, children=True)


def transaction_row(tx: TransactionSample, now: float) -> dict[str, Any]:
    """The row of one transaction in ``/transactions``: its fields and its branches."""
    row = _transaction_node(tx, now, children=False)
    row["branches"] = [_branch_fields(branch, now) for branch in tx.branches]
    return row


def launched_entry(task: TaskSample, now: float) -> dict[str, Any]:
    """The entry of one launched task in ``/tasks``, with the tasks under it."""
    return _task_node(task, now, None)


def transaction_timers(tx: TransactionSample, now: float) -> list[dict[str, Any]]:
    """Every timer of `tx` that can fire, soonest first, each with what it will do.

    The server transaction's timers (RFC 3261 §17.2), the request route's fr_timeout, the
    fr timer of each pending branch, and the timeout of each op it runs.

    Returns:
        ``[{"timer": "fr_timeout", "in": 1.25, "action": "408 + failure route x"}, ...]``.
    """
    timers: list[tuple[float, str, str]] = []
    status = "the response" if tx.last_status is None else str(tx.last_status)
    for letter, deadline in tx.timers.items():
        action = _SERVER_TIMER_ACTIONS.get(letter, "fire").format(status=status)
        timers.append((deadline, f"Timer {letter}", action))
    failure = f" + failure route {tx.failure_route}" if tx.failure_route else ""
    if tx.route_deadline is not None:
        timers.append((tx.route_deadline, "fr_timeout", f"cancel the route, 408{failure}"))
    pending = [b for b in tx.branches if b.status is None and not b.ended]
    for branch in pending:
        if branch.fr_deadline == math.inf:
            continue
        where = branch.destination or branch.branch
        if branch.provisional:
            name, action = "fr_inv_timeout", f"CANCEL the branch to {where}, 408"
        else:
            name, action = "fr_timeout", f"stop the branch to {where}, 408"
        if len(pending) == 1:
            action += failure
        timers.append((branch.fr_deadline, name, action))
    if tx.task is not None:
        timers.extend(
            (
                op.started_at + op.timeout,
                "op timeout",
                f"{op.kind} op times out: the resume route gets OpTimeout",
            )
            for op in _ops(tx.task)
            if op.timeout is not None
        )
    return [
        {"timer": name, "in": _round(deadline - now), "action": action}
        for deadline, name, action in sorted(timers, key=_first)
        if deadline < math.inf
    ]


# -- nodes --------------------------------------------------------------------------------


def _transaction_node(tx: TransactionSample, now: float, *, children: bool) -> dict[str, Any]:
    timers = transaction_timers(tx, now)
    node: dict[str, Any] = {
        "name": tx.name,
        "kind": "transaction",
        "method": tx.method,
        "ruri": tx.ruri,
        "call_id": tx.call_id,
        "branch": tx.branch,
        "state": tx.state,
        "source": tx.source,
        "age": _round(now - tx.created_at),
        "last_status": tx.last_status,
        "final_status": tx.final_status,
        "proxied": tx.proxied,
        "cancelled": tx.cancelled,
        "timers": timers,
        "next_timer": timers[0] if timers else None,
        "deadline_in": _transaction_deadline_in(tx, now),
    }
    if children:
        task = tx.task
        nodes: list[dict[str, Any]] = []
        if task is not None:
            node["waiting_in"] = task.waiting_in
            if task.op is not None:
                # The route awaits an op in the transaction's own task (``await op``).
                nodes.append(
                    _op_node("route awaits", task.op, now, tx.route_deadline, task.waiting_in)
                )
            nodes.extend(_task_node(child, now, tx.route_deadline) for child in task.children)
        node["children"] = nodes
    return node


def _task_node(task: TaskSample, now: float, route_deadline: float | None) -> dict[str, Any]:
    if task.op is not None:
        node = _op_node(task.name, task.op, now, route_deadline, task.waiting_in)
    else:
        node = {"name": task.name, "kind": _kind(task), "age": None, "deadline_in": None}
        if task.waiting_in is not None:
            node["waiting_in"] = task.waiting_in
    if task.branch is not None:
        node["branch"] = _branch_fields(task.branch, now)
    if task.client is not None:
        client = task.client
        node["client"] = _client_fields(client, now)
        node["age"] = _round(now - client.created_at)
        deadlines = [client.timers[t] for t in _FAILING_CLIENT_TIMERS if t in client.timers]
        if task.branch is not None and task.branch.status is None:
            deadlines.append(task.branch.fr_deadline)
        node["deadline_in"] = _until(min(deadlines, default=math.inf), now)
    node["children"] = [_task_node(child, now, route_deadline) for child in task.children]
    return node


def _op_node(
    name: str, op: OpSample, now: float, route_deadline: float | None, waiting_in: str | None
) -> dict[str, Any]:
    deadline = math.inf if op.timeout is None else op.started_at + op.timeout
    if route_deadline is not None:
        deadline = min(deadline, route_deadline)
    node: dict[str, Any] = {
        "name": name,
        "kind": "op",
        "age": _round(now - op.started_at),
        "deadline_in": _until(deadline, now),
        "op": {"kind": op.kind, "description": op.description, "timeout": op.timeout},
    }
    if waiting_in is not None:
        node["waiting_in"] = waiting_in
    return node


def _kind(task: TaskSample) -> str:
    if task.client is not None and task.client.method == "CANCEL":
        return "cancel"
    if task.branch is not None or task.client is not None:
        return "branch"
    if task.name.endswith(" timers"):
        return "timers"
    if task.name.startswith(("op ", "ops ", "launch ")):
        # The task of an async_() or launch() whose op has ended: its resume (or report)
        # route runs now.
        return "resume"
    return "task"


def _branch_fields(branch: BranchSample, now: float) -> dict[str, Any]:
    return {
        "index": branch.index,
        "branch": branch.branch,
        "destination": branch.destination,
        "provisional": branch.provisional,
        "cancel_sent": branch.cancel_sent,
        "ended": branch.ended,
        "status": branch.status,
        "fr_in": _until(branch.fr_deadline, now) if branch.status is None else None,
    }


def _client_fields(client: ClientSample, now: float) -> dict[str, Any]:
    return {
        "name": client.name,
        "method": client.method,
        "state": client.state,
        "retransmissions": client.retransmissions,
        "last_status": client.last_status,
        "timers": [
            {
                "timer": f"Timer {letter}",
                "in": _round(deadline - now),
                "action": _CLIENT_TIMER_ACTIONS.get(letter, "fire").format(method=client.method),
            }
            for letter, deadline in sorted(client.timers.items(), key=_second)
        ],
    }


def _transaction_deadline_in(tx: TransactionSample, now: float) -> float | None:
    # What fails the transaction: the route's fr_timeout, a branch's fr timer, or for a
    # final already sent, Timer H (the ACK never came).
    deadlines = [tx.route_deadline] if tx.route_deadline is not None else []
    deadlines += [b.fr_deadline for b in tx.branches if b.status is None and not b.ended]
    if "H" in tx.timers:
        deadlines.append(tx.timers["H"])
    return _until(min(deadlines, default=math.inf), now)


# -- helpers ------------------------------------------------------------------------------


def _ops(task: TaskSample) -> Iterable[OpSample]:
    if task.op is not None:
        yield task.op
    for child in task.children:
        yield from _ops(child)


def _by_count(counts: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _oldest_first(transactions: Iterable[TransactionSample]) -> list[TransactionSample]:
    return sorted(transactions, key=_created_at)


def _created_at(tx: TransactionSample) -> float:
    return tx.created_at


def _first(item: tuple[float, str, str]) -> float:
    return item[0]


def _second(item: tuple[str, float]) -> float:
    return item[1]


def _round(seconds: float) -> float:
    return round(seconds, _DIGITS)


def _until(deadline: float, now: float) -> float | None:
    return None if deadline == math.inf else _round(deadline - now)
