"""A read-only view of a running proxy, for the management interface (``triosip tasks``).

Theory of operation
-------------------
What runs for a transaction is trio's task tree under the server transaction's task: the
request route in that task, and in its nursery the task of each op and, over TCP, of each
branch (one client transaction, RFC 3261 §16.6) and each CANCEL sent (§9.1). Over UDP a
branch and its CANCEL are client transactions with no task (the transaction layer runs
them as records): their views carry the client transaction and no task. A reader walks
the tree with trio's own API (`trio.lowlevel.Task.child_nurseries`) and learns here what
the proxy knows of each task, by identity: each branch keeps the task that runs it (if
any) and its client transaction, recorded when they start, and each proxied transaction
the routes that run now with their cancel scopes. Task names are for people; nothing here
reads them back.

Everything is read, never changed, and synchronously: a view is of one instant. A reader
that must not hold the loop for long takes a `TransactionListing` (the transactions at one
instant, oldest first) and views it a slice at a time, with checkpoints between slices;
a transaction that ended in between is then left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from triosip.proxy._names import short_route_name

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import trio

    from triosip.proxy._transaction import Branch, ProxyTransaction, RunningRoute
    from triosip.transaction import ClientTransaction, ServerTransaction, TransactionLayer


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientView:
    """A client transaction (RFC 3261 §17.1) as it is now.

    Attributes:
        name: ``"ICT INVITE z9hG4bK..."``.
        method: the request's method.
        state: the machine's state as the RFC writes it (``"Proceeding"``).
        created_at: when it started (`trio.current_time`).
        retransmissions: how many times the request went out again (Timer A/E).
        last_status: the status of the last response received, if any.
        timers: the armed timers, letter -> deadline.
    """

    name: str
    method: str
    state: str
    created_at: float
    retransmissions: int
    last_status: int | None
    timers: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class BranchView:
    """One branch of a proxied transaction (RFC 3261 §16.6) as it is now.

    Attributes:
        index: 0 for the first branch.
        branch: the branch parameter of our Via.
        destination: where it went (``"udp:10.0.0.2:5060"``), None before it was resolved.
        provisional: whether a provisional response came.
        cancel_sent: whether we CANCELled it.
        ended: whether the branch is over for the proxy (its final response taken, or its
            client transaction stopped or ended).
        status: the final response's status, if one came (or was made up locally).
        fr_deadline: when its fr timer fires; ``inf`` when none runs.
        task: the task that runs its client transaction, while it runs (TCP only; None
            over UDP, where the client transaction is a record with no task).
        client: that client transaction, from its first transmission to its end.
        cancel_task: the task that runs its CANCEL (RFC 3261 §9.1), while it runs (TCP
            only, as `task`).
        cancel_client: the CANCEL's client transaction, while it runs.
    """

    index: int
    branch: str
    destination: str | None
    provisional: bool
    cancel_sent: bool
    ended: bool
    status: int | None
    fr_deadline: float
    task: trio.lowlevel.Task | None = None
    client: ClientView | None = None
    cancel_task: trio.lowlevel.Task | None = None
    cancel_client: ClientView | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteView:
    """A route of a proxied transaction that runs now.

    Attributes:
        name: the route's name as ``triosip tasks`` shows it (``failover``); the request
            route goes by the name of the entry point that runs it (``request``, of the
            script layer's handlers).
        deadline: its cancel scope's deadline (its fr_timeout); ``inf`` when it has none.
        request_route: whether it is the request route (whose scope is the transaction's
            fr_timeout before any branch); else a failure, onreply or branch route.
    """

    name: str
    deadline: float
    request_route: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionView:
    """A live server transaction (RFC 3261 §17.2), and the proxy's side of it if it has
    one, as it is now.

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
        timers: the armed timers, letter -> deadline.
        task: the transaction's task; None before it has started and once it has ended
            (a transaction held for its timers after its final response).
        proxied: whether the proxy runs routes for it (a CANCEL is answered at once).
        cancelled: whether a CANCEL matched it.
        failure_route: the name of the armed failure route, if any.
        routes: the routes that run now, outermost first.
        branches: its branches, in the order they were made.
    """

    name: str
    method: str
    ruri: str
    call_id: str
    branch: str
    state: str
    source: str
    created_at: float
    last_status: int | None
    final_status: int | None
    timers: Mapping[str, float]
    task: trio.lowlevel.Task | None
    proxied: bool = False
    cancelled: bool = False
    failure_route: str | None = None
    routes: tuple[RouteView, ...] = ()
    branches: tuple[BranchView, ...] = ()


class Listed:
    """One transaction of a `TransactionListing`: what filtering and counting need, read
    when its slice was listed."""

    __slots__ = ("_server", "call_id", "created_at", "method", "state")

    def __init__(self, server: ServerTransaction) -> None:
        request = server.request
        self._server = server
        self.call_id: str = request.call_id
        self.method: str = request.method
        self.state: str = server.state.value
        self.created_at: float = server.created_at


class TransactionListing:
    """The live server transactions at one instant, oldest first: a copy of the layer's
    list, to read a slice at a time."""

    def __init__(self, servers: list[ServerTransaction]) -> None:
        self._servers = servers

    def __len__(self) -> int:
        return len(self._servers)

    def entries(self, start: int, stop: int) -> list[Listed]:
        """The transactions from `start` to `stop` (as a slice), read now."""
        return [Listed(server) for server in self._servers[start:stop]]


class ProxyInspection:
    """What the management interface may know of a running proxy (`Proxy.inspect`).

    Args:
        transactions: the proxy's transaction layer.
        live: the proxied transactions, by server transaction.
    """

    def __init__(
        self,
        transactions: TransactionLayer,
        live: Mapping[ServerTransaction, ProxyTransaction],
    ) -> None:
        self._transactions = transactions
        self._live = live

    def listing(self) -> TransactionListing:
        """The live server transactions now, oldest first."""
        return TransactionListing(self._transactions.server_transactions())

    def views(self, listed: Sequence[Listed]) -> list[TransactionView]:
        """The views of those of `listed` (listed earlier) that still live, now.

        Returns:
            One view per transaction of `listed` still live, in their order.
        """
        running = set(self._transactions.server_transactions())
        live = self._live
        return [
            _transaction_view(entry._server, live.get(entry._server))
            for entry in listed
            if entry._server in running
        ]

    def all_views(self) -> list[TransactionView]:
        """The views of every live server transaction now, oldest first (in one step:
        `views` of a listing, a slice at a time, for many)."""
        live = self._live
        return [
            _transaction_view(server, live.get(server))
            for server in self._transactions.server_transactions()
        ]


def _transaction_view(server: ServerTransaction, tx: ProxyTransaction | None) -> TransactionView:
    request = server.request
    last = server.last_response
    final = server.final_response
    failure = tx.failure_route if tx is not None else None
    return TransactionView(
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
        task=server.task,
        proxied=tx is not None,
        cancelled=tx is not None and tx.cancelled,
        failure_route=short_route_name(failure) if failure is not None else None,
        routes=tuple(_route_view(tx, running) for running in tx.running_routes)
        if tx is not None
        else (),
        branches=tuple(_branch_view(branch) for branch in tx.branches) if tx is not None else (),
    )


def _route_view(tx: ProxyTransaction, running: RunningRoute) -> RouteView:
    return RouteView(
        name=short_route_name(running.route),
        deadline=running.scope.deadline,
        request_route=running.scope is tx.work_scope,
    )


def _branch_view(branch: Branch) -> BranchView:
    return BranchView(
        index=branch.index,
        branch=branch.branch,
        destination=str(branch.destination) if branch.destination is not None else None,
        provisional=branch.provisional,
        cancel_sent=branch.cancel_sent,
        ended=branch.ended,
        status=branch.response.status if branch.response is not None else None,
        fr_deadline=branch.fr_deadline,
        task=branch.task,
        client=_client_view(branch.client) if branch.client is not None else None,
        cancel_task=branch.cancel_task,
        cancel_client=(
            _client_view(branch.cancel_client) if branch.cancel_client is not None else None
        ),
    )


def _client_view(client: ClientTransaction) -> ClientView:
    last = client.last_response
    return ClientView(
        name=client.name,
        method=client.request.method,
        state=client.state.value,
        created_at=client.created_at,
        retransmissions=client.retransmissions,
        last_status=last.status if last is not None else None,
        timers=client.timer_deadlines(),
    )
