"""Sampling the live proxy into the plain data of `_tasks.py`: trio's task tree, joined
with the transaction table and the running ops.

Everything here is synchronous: each call runs between two checkpoints of the MI's task,
so no transaction can start, end or change state halfway through, and what one call
samples is of one instant. It reads, and never changes, what it walks. `sample_some`
samples a slice of the transactions, for a caller that samples many a slice at a time.

The tree is trio's (`trio.lowlevel.Task.child_nurseries`, `trio.Nursery.child_tasks`),
starting at each server transaction's task (the parent of ``ServerTransaction.nursery``).
What a task does is joined in by identity or by name: the op it runs from
`OpAccounting.running` (keyed by task), the branch and client transaction it drives from
the branch in its name ("branch <destination> <branch>", "NICT CANCEL <branch>").
Launched work runs beyond any transaction, in the script environment's nursery: its tasks
("launch <kind> <description>") are found by walking the run's tree from the root.
"""

from __future__ import annotations

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
    from collections.abc import Collection, Mapping, Sequence

    from triosip.ops import Op, OpAccounting
    from triosip.proxy import Branch, Proxy, ProxyTransaction
    from triosip.transaction import ClientTransaction, ServerTransaction, TransactionLayer

# Trio's trees are shallow (a transaction's task, a route's nursery, a gather's tasks); a
# deeper one is cut here rather than walked without end.
MAX_DEPTH = 16

_LAUNCH_PREFIX = "launch "


def sample_transactions(proxy: Proxy, accounting: OpAccounting) -> list[TransactionSample]:
    """Sample every live server transaction of `proxy`, with its tasks and branches.

    Args:
        proxy: the running proxy.
        accounting: the ops of this trio run (`triosip.ops.op_accounting`).

    Returns:
        One sample per server transaction whose task runs, in the layer's order.
    """
    return sample_some(proxy, proxy.transactions.server_transactions(), accounting)


class ClientIndex:
    """The client transactions of a layer by (branch, method), for samplers that sample a
    slice at a time: built once, and built again when a lookup misses (a client made
    since), at most once per slice (`next_slice`), since some lookups miss for good (the
    branch of an ACK of a 2xx has no client transaction). Building it costs ~1 µs per
    client.

    Args:
        layer: the transaction layer; None for an index that finds nothing.
    """

    def __init__(self, layer: TransactionLayer | None) -> None:
        self._layer = layer
        self._index: dict[tuple[str, str], ClientTransaction] = {}
        self._may_build = True

    def next_slice(self) -> None:
        """Let the next miss build the index again."""
        self._may_build = True

    def get(self, key: tuple[str, str]) -> ClientTransaction | None:
        """The client transaction of this branch and method, if one runs."""
        found = self._index.get(key)
        if found is None and self._may_build and self._layer is not None:
            self._may_build = False
            self._index = {
                (client.branch, client.request.method): client
                for client in self._layer.client_transactions()
            }
            found = self._index.get(key)
        return found


def sample_some(
    proxy: Proxy,
    servers: Sequence[ServerTransaction],
    accounting: OpAccounting,
    clients: ClientIndex | None = None,
) -> list[TransactionSample]:
    """Sample those of `servers` (listed earlier) whose task still runs.

    Args:
        proxy: the running proxy.
        servers: some of its server transactions, maybe listed before a checkpoint.
        accounting: the ops of this trio run.
        clients: the index of client transactions kept from slice to slice; a new one
            when None.

    Returns:
        One sample per server transaction of `servers` still running, in their order.
    """
    layer = proxy.transactions
    running = set(layer.server_transactions())
    if clients is None:
        clients = ClientIndex(layer)
    clients.next_slice()
    return [
        _sample_transaction(server, proxy.live.get(server), clients, accounting)
        for server in servers
        if server in running
    ]


def sample_launched(
    accounting: OpAccounting, *, skip: Collection[trio.lowlevel.Task] = ()
) -> list[TaskSample]:
    """Sample the tasks of ``launch()``ed work, wherever they run in this trio run.

    Args:
        accounting: the ops of this trio run.
        skip: tasks not to walk into (the transactions' tasks: nothing is launched there).

    Returns:
        One sample per launched task, with the tasks under it.
    """
    root = trio.lowlevel.current_root_task()
    if root is None:  # pragma: no cover - only outside trio.run
        return []
    current = trio.lowlevel.current_task()
    found: list[TaskSample] = []
    stack = [root]
    while stack:
        task = stack.pop()
        if task.name.startswith(_LAUNCH_PREFIX):
            found.append(_sample_task(task, accounting, {}, ClientIndex(None), "", current, 0))
            continue
        if task in skip:
            continue
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return sorted(found, key=_started)


def server_tasks(proxy: Proxy) -> list[trio.lowlevel.Task]:
    """The tasks of `proxy`'s live server transactions (to skip in `sample_launched`)."""
    tasks = []
    for server in proxy.transactions.server_transactions():
        nursery = _nursery_of(server)
        if nursery is not None:
            tasks.append(nursery.parent_task)
    return tasks


def _sample_transaction(
    server: ServerTransaction,
    tx: ProxyTransaction | None,
    clients: ClientIndex,
    accounting: OpAccounting,
) -> TransactionSample:
    request = server.request
    branches = tuple(_sample_branch(branch) for branch in tx.branches) if tx is not None else ()
    nursery = _nursery_of(server)
    task_sample: TaskSample | None = None
    route_deadline: float | None = None
    if nursery is not None:
        task = nursery.parent_task
        by_branch = {sample.branch: sample for sample in branches}
        task_sample = _sample_task(
            task, accounting, by_branch, clients, request.method, trio.lowlevel.current_task(), 0
        )
        # The request route runs while the transaction's task has a nursery besides its
        # own: the route's ops nursery (script handlers open one around every route). Before
        # any branch, its fr_timeout (work_scope) is what fails the transaction.
        route_running = any(child is not nursery for child in task.child_nurseries)
        if tx is not None and route_running and not tx.branches and not tx.final_sent:
            deadline = tx.work_scope.deadline
            route_deadline = deadline if deadline < math.inf else None
    last = server.last_response
    final = server.final_response
    failure = tx.failure_route if tx is not None else None
    return TransactionSample(
        name=server.name,
        method=request.method,
        ruri=request.uri_raw,
        call_id=request.call_id,
        branch=server.branch,
        state=server.state.value,
        source=str(server.inbound.source),
        created_at=server.created_at,
        last_status=last.status if last is not None else None,
        final_status=final.status if final is not None else None,
        timers=server.timer_deadlines(),
        proxied=tx is not None,
        cancelled=tx.cancelled if tx is not None else False,
        route_deadline=route_deadline,
        failure_route=_route_name(failure) if failure is not None else None,
        branches=branches,
        task=task_sample,
    )


def _sample_branch(branch: Branch) -> BranchSample:
    return BranchSample(
        index=branch.index,
        branch=branch.branch,
        destination=str(branch.destination) if branch.destination is not None else None,
        provisional=branch.provisional,
        cancel_sent=branch.cancel_sent,
        ended=branch.ended,
        status=branch.response.status if branch.response is not None else None,
        fr_deadline=branch.fr_deadline,
    )


def _sample_task(
    task: trio.lowlevel.Task,
    accounting: OpAccounting,
    branches: Mapping[str, BranchSample],
    clients: ClientIndex,
    method: str,
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
                    _sample_task(child, accounting, branches, clients, method, current, depth + 1)
                    for nursery in task.child_nurseries
                    for child in nursery.child_tasks
                ),
                key=_started,
            )
        )
    name = task.name
    branch: BranchSample | None = None
    client: ClientTransaction | None = None
    if name.startswith("branch "):
        # "branch udp:10.0.0.2:5060 z9hG4bK..." runs the client transaction of the request
        # (an ACK of a 2xx has none); "NICT CANCEL z9hG4bK..." that of its CANCEL (§9.1).
        branch_id = name.rsplit(" ", 1)[-1]
        branch = branches.get(branch_id)
        client = clients.get((branch_id, method))
    elif name.startswith("NICT CANCEL "):
        branch_id = name.rsplit(" ", 1)[-1]
        branch = branches.get(branch_id)
        client = clients.get((branch_id, "CANCEL"))
    op = accounting.running.get(task)
    # Where a task waits says what it does when nothing else does; an op's description
    # and a branch's client transaction say it better, and walking the frames is most of
    # a snapshot's cost (~20 µs a task).
    described = op is not None or client is not None
    return TaskSample(
        name=name,
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


def _sample_client(client: ClientTransaction) -> ClientSample:
    last = client.last_response
    return ClientSample(
        name=client.name,
        method=client.request.method,
        state=client.state.value,
        created_at=client.created_at,
        retransmissions=client.retransmissions,
        last_status=last.status if last is not None else None,
        timers=client.timer_deadlines(),
    )


def _started(sample: TaskSample) -> tuple[float, str]:
    if sample.op is not None:
        return (sample.op.started_at, sample.name)
    if sample.client is not None:
        return (sample.client.created_at, sample.name)
    return (math.inf, sample.name)


def _route_name(route: object) -> str:
    # The script layer names its wrappers after the route ("failover"); a route defined
    # inside a function has a dotted qualname whose last part is its name.
    return str(getattr(route, "__qualname__", repr(route))).rsplit(".", 1)[-1]


def _nursery_of(server: ServerTransaction) -> trio.Nursery | None:
    # Set by the transaction's task when it starts; a transaction made in this very tick
    # has none yet.
    return getattr(server, "nursery", None)


def _waiting_in(task: trio.lowlevel.Task) -> str | None:
    """Where `task` waits: its innermost awaiting frame outside trio itself."""
    where: str | None = None
    for frame, lineno in task.iter_await_frames():
        module = str(frame.f_globals.get("__name__", "?"))
        if module == "trio" or module.startswith("trio."):
            continue
        where = f"{module}.{frame.f_code.co_qualname}:{lineno}"
    return where
