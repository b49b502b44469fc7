"""Sampling the live proxy into the plain data of `_tasks.py`: trio's task tree, joined
with the proxy's inspection views and the running ops.

Everything here is synchronous: each call runs between two checkpoints of the MI's task,
so no transaction can start, end or change state halfway through, and what one call
samples is of one instant. It reads, and never changes, what it walks. `sample_some`
samples a slice of a listing, for a caller that samples many a slice at a time.

The proxy says what runs through its read-only inspection interface
(`triosip.proxy.inspection`): each transaction's task, each branch's client
transaction (and task, over TCP), each CANCEL's, the routes running with their deadlines;
a branch or CANCEL with no task is a node of its own under the transaction's task. The
tree is trio's (`trio.lowlevel.Task.child_nurseries`, `trio.Nursery.child_tasks`), starting
at each server transaction's task, and what a task does is joined in by identity: the
branch or CANCEL it runs from the views, the op it runs from `OpAccounting.running` (keyed
by task). Launched work runs beyond any transaction, in the script environment's nursery,
whose tasks the caller hands in.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import trio

from triosip.mi._tasks import (
    BranchSample,
    ClientSample,
    OpSample,
    TaskSample,
    TransactionSample,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from triosip.ops import Op, OpAccounting
    from triosip.proxy.inspection import (
        BranchView,
        ClientView,
        Listed,
        ProxyInspection,
        TransactionView,
    )

# Trio's trees are shallow (a transaction's task, a route's nursery, a gather's tasks); a
# deeper one is cut here rather than walked without end.
MAX_DEPTH = 16

# What the views say a task runs: the branch it belongs to and the client transaction it
# drives (a branch's request, or its CANCEL).
_Runs = tuple[BranchSample, "ClientView | None"]


def sample_some(
    inspection: ProxyInspection, listed: Sequence[Listed], accounting: OpAccounting
) -> list[TransactionSample]:
    """Sample those of `listed` (listed earlier) that still live.

    Args:
        inspection: the running proxy's inspection interface.
        listed: some of its transactions, maybe listed before a checkpoint.
        accounting: the ops of this trio run.

    Returns:
        One sample per transaction of `listed` still live, in their order.
    """
    return _samples(inspection.views(listed), accounting)


def sample_launched(
    tasks: Iterable[trio.lowlevel.Task], accounting: OpAccounting
) -> list[TaskSample]:
    """Sample the tasks of ``launch()``ed work.

    Args:
        tasks: the launched tasks (those of the script environment's nursery).
        accounting: the ops of this trio run.

    Returns:
        One sample per launched task, with the tasks under it, the earliest first.
    """
    current = trio.lowlevel.current_task()
    return sorted((_sample_task(task, accounting, {}, current, 0) for task in tasks), key=_started)


def _samples(views: Iterable[TransactionView], accounting: OpAccounting) -> list[TransactionSample]:
    current = trio.lowlevel.current_task()
    return [_sample_transaction(view, accounting, current) for view in views]


def _sample_transaction(
    view: TransactionView, accounting: OpAccounting, current: trio.lowlevel.Task
) -> TransactionSample:
    branches: list[BranchSample] = []
    runs: dict[trio.lowlevel.Task, _Runs] = {}
    # Client transactions over UDP run without a task (TransactionLayer.start_client):
    # they are nodes of their own under the transaction's task, named as a task would be.
    records: list[TaskSample] = []
    for branch in view.branches:
        sample = _sample_branch(branch)
        branches.append(sample)
        # An ACK of a 2xx has no client transaction: its task runs with none.
        if branch.task is not None:
            runs[branch.task] = (sample, branch.client)
        elif branch.client is not None:
            records.append(
                _record(f"branch {branch.destination} {branch.branch}", sample, branch.client)
            )
        if branch.cancel_task is not None:
            runs[branch.cancel_task] = (sample, branch.cancel_client)
        elif branch.cancel_client is not None:
            records.append(_record(f"NICT CANCEL {branch.branch}", sample, branch.cancel_client))
    task_sample = (
        _sample_task(view.task, accounting, runs, current, 0) if view.task is not None else None
    )
    if task_sample is not None and records:
        children = tuple(sorted((*task_sample.children, *records), key=_started))
        task_sample = dataclasses.replace(task_sample, children=children)
    # Before any branch, the request route's fr_timeout (its scope's deadline) is what
    # fails the transaction.
    route_deadline: float | None = None
    if not view.branches and view.final_status is None:
        for route in view.routes:
            if route.request_route and route.deadline < math.inf:
                route_deadline = route.deadline
    return TransactionSample(
        name=view.name,
        method=view.method,
        ruri=view.ruri,
        call_id=view.call_id,
        branch=view.branch,
        state=view.state,
        source=view.source,
        created_at=view.created_at,
        last_status=view.last_status,
        final_status=view.final_status,
        timers=view.timers,
        proxied=view.proxied,
        cancelled=view.cancelled,
        route_deadline=route_deadline,
        failure_route=view.failure_route,
        branches=tuple(branches),
        task=task_sample,
    )


def _record(name: str, branch: BranchSample, client: ClientView) -> TaskSample:
    return TaskSample(name=name, client=_sample_client(client), branch=branch)


def _sample_branch(branch: BranchView) -> BranchSample:
    return BranchSample(
        index=branch.index,
        branch=branch.branch,
        destination=branch.destination,
        provisional=branch.provisional,
        cancel_sent=branch.cancel_sent,
        ended=branch.ended,
        status=branch.status,
        fr_deadline=branch.fr_deadline,
    )


def _sample_task(
    task: trio.lowlevel.Task,
    accounting: OpAccounting,
    runs: Mapping[trio.lowlevel.Task, _Runs],
    current: trio.lowlevel.Task,
    depth: int,
) -> TaskSample:
    children: tuple[TaskSample, ...] = ()
    if depth < MAX_DEPTH:
        # A nursery's tasks are a set: sorted by when their work started, then by name,
        # so that the tree does not reshuffle from one look to the next.
        children = tuple(
            sorted(
                (
                    _sample_task(child, accounting, runs, current, depth + 1)
                    for nursery in task.child_nurseries
                    for child in nursery.child_tasks
                ),
                key=_started,
            )
        )
    branch, client = runs.get(task, (None, None))
    op = accounting.running.get(task)
    # Where a task waits says what it does when nothing else does; an op's description
    # and a branch's client transaction say it better, and walking the frames is most of
    # a snapshot's cost (~20 µs a task).
    described = op is not None or client is not None
    return TaskSample(
        name=task.name,
        op=_sample_op(op) if op is not None else None,
        client=_sample_client(client) if client is not None else None,
        branch=branch,
        waiting_in=_waiting_in(task) if task is not current and not described else None,
        children=children,
    )


def _sample_op(op: Op[Any]) -> OpSample:
    return OpSample(
        kind=op.kind,
        description=op.description,
        started_at=op.started_at if op.started_at is not None else trio.current_time(),
        # An endless timeout (a script may pass inf) is no timeout; JSON has no infinity.
        timeout=op.timeout if op.timeout is not None and math.isfinite(op.timeout) else None,
    )


def _sample_client(client: ClientView) -> ClientSample:
    return ClientSample(
        name=client.name,
        method=client.method,
        state=client.state,
        created_at=client.created_at,
        retransmissions=client.retransmissions,
        last_status=client.last_status,
        timers=client.timers,
    )


def _started(sample: TaskSample) -> tuple[float, str]:
    if sample.op is not None:
        return (sample.op.started_at, sample.name)
    if sample.client is not None:
        return (sample.client.created_at, sample.name)
    return (math.inf, sample.name)


def _waiting_in(task: trio.lowlevel.Task) -> str | None:
    """Where `task` waits: its innermost awaiting frame outside trio itself."""
    where: str | None = None
    for frame, lineno in task.iter_await_frames():
        module = str(frame.f_globals.get("__name__", "?"))
        if module == "trio" or module.startswith("trio."):
            continue
        where = f"{module}.{frame.f_code.co_qualname}:{lineno}"
    return where
