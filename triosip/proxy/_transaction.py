"""One proxied transaction: the request route, its branches, and the answer (RFC 3261 §16).

Theory of operation
-------------------
A `ProxyTransaction` lives inside its server transaction's task and nursery
(`ServerTransaction.nursery`). `run()` is that task's body:

1. the §16.3 checks (483, 482, 420), answered at once;
2. the request route, in its cancel scope `work_scope`, with a nursery for the ops it
   started once it has returned (`RunningRoute`): the scope's deadline is the
   transaction's fr timer and a CANCEL cancels it, so whatever the route awaits or starts
   (ops, DNS) is cancelled with it;
3. the responses: each branch is one client transaction. Over UDP it is a record that
   the transaction layer runs without a task (``TransactionLayer.start_client``), and what
   needs no route is done where the response arrives, synchronously: a provisional or a
   2xx is forwarded upstream at once (§16.7 steps 5 and 9), the other branches CANCELled
   on a 2xx. What needs a route — an onreply route, a negative final (the failure route,
   or the best final once every branch has answered), a branch that ended without an
   answer — waits in a queue for the response loop, in this task, which wakes for it. The
   loop also waits for the per-branch fr timers, on an alarm that the layer's timers loop
   serves (``TransactionLayer.alarm``): when one passes, the branch gets a local 408 and,
   if it had a provisional response, a CANCEL (§16.8). A branch over TCP runs its client
   transaction in a task of the nursery, whose connect and sends it awaits; its responses
   take the same way.

Routes are plain async callables handed in by the script layer, so this module knows
nothing of scripts. Everything a route may do to the transaction is a method here.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from triosip import ids
from triosip.log import LogPrefix, shown
from triosip.proxy._forward import (
    BRANCH_PREFIX,
    NextHop,
    RoutingError,
    forward_request,
    loop_hash,
    strip_own_routes,
    target_of,
)
from triosip.proxy._names import route_name
from triosip.proxy._response import best_response, forwarded_status, merge_challenges
from triosip.proxy._statistics import status_class
from triosip.sip import Request, Response, build_cancel, build_response
from triosip.transaction import (
    Alarm,
    ClientState,
    ClientTransaction,
    ServerTransaction,
    TransactionError,
    TransactionTimeout,
    TransportFailure,
)
from triosip.transport import Address, TransportError

if TYPE_CHECKING:
    from triosip.proxy._port import ProxyPort, Stamps

logger = logging.getLogger(__name__)

# `status_class` of each hundred, looked up per response rather than formatted (statuses
# are 100-699: checked when parsed, and ours).
STATUS_CLASSES = tuple(status_class(hundred * 100) for hundred in range(10))

# RFC 3261 §18.1.1: requests larger than this go over TCP when the path MTU is unknown.
UDP_SIZE_LIMIT = 1300

# How many responses may wait for the response loop before new ones are dropped; UDP
# peers retransmit, and a transaction rarely sees more than a handful.
INBOX_SIZE = 64

# The states of a client transaction that still waits for its final response: stopped
# when the proxy transaction ends. Past them it only absorbs retransmissions, on its own.
_UNANSWERED = (ClientState.CALLING, ClientState.TRYING, ClientState.PROCEEDING)

FailureRoute = Callable[["ProxyTransaction", Response], Awaitable[None]]
ReplyRoute = Callable[["ProxyTransaction", "Branch", Response], Awaitable[bool]]
BranchRoute = Callable[["ProxyTransaction", "Branch"], Awaitable[None]]


@dataclass(eq=False, slots=True)
class Branch:
    """One destination the request was forwarded to (a client transaction, RFC 3261 §16.6)."""

    index: int
    request: Request
    destination: Address | None = None
    branch: str = ""
    # The cancel scope of the branch's task (over TCP): made when first needed (`scope`).
    _scope: trio.CancelScope | None = None
    fr_deadline: float = math.inf
    provisional: bool = False
    response: Response | None = None
    cancel_sent: bool = False
    ended: bool = False
    # Over UDP the client transaction runs without a task (``start_client``): stopped by
    # the proxy at `stop_at` (64*T1 after its CANCEL, §9.1) rather than by `scope`.
    stop_at: float = math.inf
    # RFC 3261 §18.1.1: the request and address over UDP, when it went over TCP only for
    # its size: a refused connection then has it retried over UDP.
    udp_fallback: tuple[Request, Address] | None = None
    # What runs for the branch, for the management interface to find by identity: the task
    # and client transaction of the request, then those of its CANCEL (RFC 3261 §9.1).
    # Each is set while it runs: a client transaction from its first transmission on.
    task: trio.lowlevel.Task | None = None
    client: ClientTransaction | None = None
    cancel_task: trio.lowlevel.Task | None = None
    cancel_client: ClientTransaction | None = None

    @property
    def scope(self) -> trio.CancelScope:
        """The cancel scope of the branch's task, over TCP (a branch over UDP runs none)."""
        if self._scope is None:
            self._scope = trio.CancelScope()
        return self._scope

    @property
    def pending(self) -> bool:
        """No final response yet."""
        return self.response is None


# An op a route started before its nursery was open: the function, its arguments, the
# name of its task.
_PendingOp = tuple[Callable[..., Awaitable[Any]], tuple[Any, ...], str]


class RunningRoute:
    """A route that runs now, inside its cancel scope (`ProxyTransaction.run_route`), and
    the ops it started (`start_soon`).

    Most routes relay and return: the nursery for their ops is opened only for a route
    that started one, once the route has returned (an op started by ``async_()`` is the
    route's last word: it resumes another route). The ops run inside `scope`, so a CANCEL
    or the fr timer cancels them as it cancels the route; what an op starts once the
    nursery is open (a resume route's own ``async_()``) starts there at once.
    """

    __slots__ = ("_pending", "ops", "route", "scope")

    def __init__(self, route: Callable[..., Awaitable[Any]], scope: trio.CancelScope) -> None:
        self.route = route
        self.scope = scope
        # The nursery the ops run in, once open; before, the ops waiting for it (a list
        # made by the first: most routes start none).
        self.ops: trio.Nursery | None = None
        self._pending: list[_PendingOp] | None = None

    def start_soon(self, work: Callable[..., Awaitable[Any]], *args: Any, name: str) -> None:
        """Start an op of the route: in its nursery, or once the route has returned."""
        if self.ops is not None:
            self.ops.start_soon(work, *args, name=name)
        elif self._pending is None:
            self._pending = [(work, args, name)]
        else:
            self._pending.append((work, args, name))

    async def run_ops(self) -> None:
        """Run the ops the route started to their end, in a nursery of their own."""
        async with trio.open_nursery() as ops:
            self.ops = ops
            pending, self._pending = self._pending or [], None
            for work, args, name in pending:
                ops.start_soon(work, *args, name=name)


class ProxyTransaction:
    """The proxy's side of one server transaction: what the routes act on.

    Owns nothing of its own: its branches and ops run in `server.nursery`.
    """

    def __init__(self, proxy: ProxyPort, server: ServerTransaction) -> None:
        self.proxy = proxy
        self.server = server
        self.request: Request = server.request
        self.vars: dict[str, Any] = {}
        self.fr_timeout = proxy.config.fr_timeout
        self.fr_inv_timeout = proxy.config.fr_inv_timeout
        self.failure_route: FailureRoute | None = None
        self.reply_route: ReplyRoute | None = None
        self.branch_route: BranchRoute | None = None
        self.branches: list[Branch] = []
        self.record_route_requested = False
        self.cancelled = False
        # The routes running now, with their scopes (the request route's is `work_scope`):
        # a CANCEL cancels them, and with them every op the routes await or started.
        # The request route's scope, once it runs (`run_route`).
        self.work_scope: trio.CancelScope | None = None
        self._routes: list[RunningRoute] = []
        self._to_tag: str | None = None
        # What waits for the response loop (a response needing a route, a branch's end),
        # and the loop's task while it is parked waiting for it.
        self._inbox: deque[tuple[Branch, Response | None]] = deque()
        self._parked: trio.lowlevel.Task | None = None
        # The branches' timers (fr, Timer C, 64*T1 after a CANCEL) wake the parked loop
        # from the layer's timers loop: no cancel scope per wait, no deadline to move in
        # trio's each time a provisional response restarts Timer C.
        # Made when the loop first parks, closed when it ends: its callback names us, so
        # an alarm left open would keep the transaction in a reference cycle.
        self._alarm: Alarm | None = None
        self._live_branches = 0

    # -- what routes see ------------------------------------------------------------

    @property
    def final_sent(self) -> bool:
        """Whether a final response went back upstream."""
        return self.server.final_response is not None

    @property
    def to_tag(self) -> str:
        """Our To tag for the responses we generate ourselves (RFC 3261 §8.2.6.2)."""
        if self._to_tag is None:
            self._to_tag = ids.token_hex(6)
        return self._to_tag

    @property
    def running_routes(self) -> tuple[RunningRoute, ...]:
        """The routes running now, outermost first (a branch route runs inside the request
        route's `relay()`), each with the cancel scope it runs in."""
        return tuple(self._routes)

    def log_prefix(self) -> LogPrefix:
        # Both come from the wire: cut (when a line is written), so that a 60 KB Call-ID
        # is not in every line.
        return LogPrefix(self.request.call_id, self.server.branch)

    def set_fr_timeout(self, seconds: float) -> None:
        """tm's fr_timeout for this transaction: how long a branch may wait for any reply,
        and how long the request route and its ops may run."""
        if not seconds > 0:
            raise ValueError(f"fr_timeout must be > 0, not {seconds}")
        self.fr_timeout = seconds
        if self.work_scope is not None:
            self.work_scope.deadline = self.server.created_at + seconds

    def set_fr_inv_timeout(self, seconds: float) -> None:
        """tm's fr_inv_timeout: how long an INVITE branch may ring after a provisional reply."""
        if not seconds > 0:
            raise ValueError(f"fr_inv_timeout must be > 0, not {seconds}")
        self.fr_inv_timeout = seconds

    async def reply(
        self, status: int, reason: str | None = None, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """Answer the request ourselves (OpenSIPS's t_reply).

        Raises:
            TransactionError: a final response was sent already.
        """
        response = build_response(
            self.server.request, status, reason, to_tag=self.to_tag, headers=headers
        )
        self._send_upstream(response, generated=True)
        if status >= 200:
            self._cancel_pending_branches()

    async def relay(self, destination: NextHop | None = None) -> bool:
        """Forward the request on a new branch (OpenSIPS's t_relay): to `destination`, or
        else where its Route set or Request-URI point.

        Returns at once, once the branch is on its way: its responses come to the
        response loop. Returns False (and logs why) when the request cannot be forwarded
        from here; the route may then reply.
        """
        if self.final_sent:
            logger.warning("%s relay after the final response: ignored", self.log_prefix())
            return False
        if self.cancelled:
            return False
        branch = Branch(index=len(self.branches), request=self.request)
        if self.branch_route is not None and not await self.run_route(
            self.branch_route, self, branch
        ):
            return False
        try:
            sent = await self._prepare_branch(branch, destination)
        except RoutingError as exc:
            logger.info("%s cannot relay: %s", self.log_prefix(), shown(exc.reason))
            return False
        self.branches.append(branch)
        self._live_branches += 1
        self.proxy.counters.requests_forwarded[branch.request.method] += 1
        assert branch.destination is not None
        if branch.destination.transport == "udp":
            branch.client = self.proxy.transactions.start_client(
                branch.request,
                branch.destination,
                # A partial, not a lambda: no frame of ours per response.
                on_response=functools.partial(self._client_response, branch),
                on_end=lambda _client, failure: self._client_ended(branch, failure),
                # The 2xx retransmissions that the Accepted state would pass up go through
                # on_stray, forwarded statelessly (RFC 6026 §8.4).
                wait_in_accepted=False,
            )
        else:
            self.server.nursery.start_soon(self._run_branch, branch, name=f"branch {sent}")
        return True

    def loose_route(self) -> bool:
        """Remove the Route entries that name this proxy (RFC 3261 §16.4; rr's loose_route).

        Returns:
            Whether the request carried a Route set, i.e. is routed within a dialog.
        """
        self.request, routed = strip_own_routes(self.request, self.proxy.own_addresses)
        return routed

    # -- the transaction's life -----------------------------------------------------

    async def run(self) -> None:
        """The server transaction's body: checks, request route, responses (see module doc)."""
        if await self._reject_if_invalid():
            return
        finished = await self.run_route(self.proxy.handlers.request, self, request_route=True)
        if not finished and not self.final_sent:
            if self.cancelled:
                if not self.branches:
                    await self.reply(487, "Request Terminated")
            else:
                logger.info("%s fr_timeout in the request route", self.log_prefix())
                timeout = build_response(self.request, 408, to_tag=self.to_tag)
                await self._fail(timeout, via_is_ours=False)
        try:
            await self._process_responses()
        finally:
            self._release_clients()
        if not self.final_sent and not self.branches:
            logger.info("%s %s dropped by the route", self.log_prefix(), self.request.method)

    async def run_route(
        self,
        route: Callable[..., Awaitable[Any]],
        *args: Any,
        request_route: bool = False,
    ) -> bool:
        """Run one of the transaction's routes, with what it awaits and the ops it starts
        (`route_ops`), in a cancel scope that a CANCEL cancels and whose deadline is the fr
        timer: for the request route, the transaction's (its
        `work_scope`), else `fr_timeout` from now. The route's run ends when its ops have.

        Returns:
            False when the scope was cancelled (CANCEL or fr timeout) before the route ended.
        """
        deadline = (self.server.created_at if request_route else self.proxy.now()) + self.fr_timeout
        # A cancel scope, not a nursery: most routes start no op (`RunningRoute`), and a
        # nursery would cost three times the scope's calls, per route.
        scope = trio.CancelScope(deadline=deadline)
        running = RunningRoute(route, scope)
        if request_route:
            self.work_scope = scope
        if self.cancelled:
            scope.cancel()
        routes = self._routes
        routes.append(running)
        try:
            try:
                with scope:
                    await route(*args)
                    if running._pending:
                        await running.run_ops()
            finally:
                routes.remove(running)
        except Exception as exc:
            # The route's, or its ops' (an ExceptionGroup): logged, answered 500.
            self.proxy.route_failed(self, route, exc)
            if not self.final_sent:
                await self.reply(500, "Server Internal Error")
        if scope.cancelled_caught and not self.cancelled:
            logger.info(
                "%s route %s: fr_timeout (%g s) passed, its ops cancelled",
                self.log_prefix(),
                route_name(route),
                self.fr_timeout,
            )
        return not scope.cancelled_caught

    @property
    def route_ops(self) -> RunningRoute:
        """The innermost route running now, which starts the ops it is asked to
        (`RunningRoute.start_soon`: inside the route's cancel scope, which a CANCEL or its
        fr timer cancels)."""
        return self._routes[-1]

    def is_cancelled(self) -> bool:
        """Whether a CANCEL matched (a method, so that type narrowing doesn't outlive an
        await after which it may have changed)."""
        return self.cancelled

    def cancel(self) -> None:
        """A CANCEL matched this INVITE (RFC 3261 §16.10): stop the running route and every
        op it awaits or started, and CANCEL every pending branch; the 487 comes from the
        branches, or from us if there is none."""
        if self.cancelled or self.final_sent:
            return
        self.cancelled = True
        for running in self._routes:
            running.scope.cancel()
        self._cancel_pending_branches()

    async def _reject_if_invalid(self) -> bool:
        request = self.request
        if request.max_forwards == 0 and request.method != "ACK":
            await self.reply(483, "Too Many Hops")
            return True
        if self.proxy.has_looped(request):
            await self.reply(482, "Loop Detected")
            return True
        # RFC 3261 §16.3 step 5: we support no extension a Proxy-Require can ask for.
        required = request.header_values("proxy-require")
        if required:
            await self.reply(420, "Bad Extension", headers=(("Unsupported", ", ".join(required)),))
            return True
        return False

    async def _prepare_branch(self, branch: Branch, destination: NextHop | None) -> str:
        request = branch.request  # stamped with its source in _forwarded_request
        hop = target_of(request, destination)
        address = await self.proxy.resolve(hop)
        received = self.server.request
        digest = loop_hash(received, received.top_via)
        branch.branch = f"{BRANCH_PREFIX}{digest}.{ids.token_hex(6)}"
        came = self.server.inbound if self.record_route_requested else None
        stamps = self.proxy.stamps.toward(address, came)
        forwarded = self._forwarded_request(request, address, branch.branch, stamps)
        if (
            address.transport == "udp"
            and stamps.tcp_listener
            and len(bytes(forwarded)) > UDP_SIZE_LIMIT
        ):
            # RFC 3261 §18.1.1: a request within 200 bytes of the path MTU (1300 bytes when
            # the MTU is unknown) goes over a congestion-controlled transport instead.
            branch.udp_fallback = (forwarded, address)
            address = Address("tcp", address.host, address.port)
            stamps = self.proxy.stamps.toward(address, came)
            forwarded = self._forwarded_request(request, address, branch.branch, stamps)
        branch.request = forwarded
        branch.destination = address
        branch.fr_deadline = self.proxy.now() + self.fr_timeout
        return f"{address} {branch.branch}"

    def _forwarded_request(
        self, request: Request, address: Address, branch: str, stamps: Stamps
    ) -> Request:
        """The request as it leaves for `address`: Max-Forwards, Record-Route, our Via."""
        # A stream needs Content-Length (RFC 3261 §20.14); a datagram may come without.
        return forward_request(
            request,
            via=stamps.via_before_branch + branch,
            record_route=stamps.record_route,
            source=self.server.inbound.source,
            reliable=address.reliable,
        )

    async def _run_branch(self, branch: Branch) -> None:
        branch.task = trio.lowlevel.current_task()
        try:
            await self._run_branch_client(branch)
        finally:
            branch.task = None

    async def _run_branch_client(self, branch: Branch) -> None:
        local: Response | None = None
        with branch.scope:
            while True:
                assert branch.destination is not None
                try:
                    await self.proxy.transactions.run_client(
                        branch.request,
                        branch.destination,
                        on_response=lambda _client, response: self._post(branch, response),
                        # The 2xx retransmissions that the Accepted state would pass up go
                        # through on_stray, forwarded statelessly (RFC 6026 §8.4), so the
                        # branch need not hold its 64*T1 of memory for them.
                        wait_in_accepted=False,
                        task_status=_Started(branch, cancel=False),
                    )
                except TransactionTimeout:
                    local = build_response(branch.request, 408, to_tag=self.to_tag)
                except TransportFailure as exc:
                    if self._fall_back_to_udp(branch, exc):
                        continue
                    # RFC 3261 §16.9: a transport error on a branch is a 503 from it.
                    logger.info("%s branch %s: %s", self.log_prefix(), branch.branch, exc)
                    local = build_response(branch.request, 503, to_tag=self.to_tag)
                finally:
                    branch.client = None
                break
        if local is not None:
            self._post(branch, local)
        self._post(branch, None)

    def _fall_back_to_udp(self, branch: Branch, failure: TransportFailure) -> bool:
        """RFC 3261 §18.1.1: "if the request was sent using TCP because of this message
        size constraint, and the attempt to establish the connection generates either an
        ICMP Protocol Not Supported, or results in a TCP reset, the element SHOULD retry
        the request, using UDP". Sets the branch up for that retry, once; False if it
        does not apply."""
        fallback, branch.udp_fallback = branch.udp_fallback, None
        cause = failure.__cause__
        if fallback is None or not (isinstance(cause, TransportError) and cause.refused):
            return False
        logger.info(
            "%s branch %s: %s; retrying over UDP (RFC 3261 §18.1.1)",
            self.log_prefix(),
            branch.branch,
            cause,
        )
        branch.request, branch.destination = fallback
        return True

    # -- the responses ----------------------------------------------------------------

    def _client_response(
        self, branch: Branch, _client: ClientTransaction, response: Response
    ) -> None:
        """A response from a branch's task-less client transaction (``start_client``)."""
        self._post(branch, response)
        if response.status >= 200 and not branch.ended:
            # The branch is answered: what is left of its client transaction (absorbing
            # retransmissions of the final, RFC 3261 §17.1.1.2) runs on without us.
            self._post(branch, None)

    def _client_ended(self, branch: Branch, failure: BaseException | None) -> None:
        """A branch's task-less client transaction terminated by itself."""
        if branch.client is not None and branch.client.state is ClientState.TERMINATED:
            branch.client = None
        if branch.ended:
            return
        if isinstance(failure, TransactionTimeout):
            self._post(branch, build_response(branch.request, 408, to_tag=self.to_tag))
        elif isinstance(failure, TransportFailure):
            # RFC 3261 §16.9: a transport error on a branch is a 503 from it.
            logger.info("%s branch %s: %s", self.log_prefix(), branch.branch, failure)
            self._post(branch, build_response(branch.request, 503, to_tag=self.to_tag))
        elif failure is not None:
            logger.error(
                "%s branch %s: handling a response failed: %r",
                self.log_prefix(),
                branch.branch,
                failure,
            )
        self._post(branch, None)

    def _post(self, branch: Branch, response: Response | None) -> None:
        """Act on a branch's response (None: the branch ended), now if no route is needed,
        else in the response loop. Synchronous: called where the response arrives."""
        if not self._inbox and self.reply_route is None:
            if response is None:
                if branch.response is not None:
                    self._end_branch(branch)
                    return
            elif response.status < 200 or response.status // 100 == 2:
                self._take_response(branch, response)
                return
        if len(self._inbox) >= INBOX_SIZE:
            # Only a flood of retransmitted responses fills the inbox; they come again.
            logger.warning("%s response inbox full: dropped", self.log_prefix())
            return
        self._inbox.append((branch, response))
        self._wake()

    def _wake(self) -> None:
        task, self._parked = self._parked, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    def _unpark(self, _: Any) -> trio.lowlevel.Abort:
        """The abort function of the parked response loop: cancelled from outside."""
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def _process_responses(self) -> None:
        inbox = self._inbox
        try:
            while self._live_branches or inbox:
                if inbox:
                    branch, response = inbox.popleft()
                    if response is None:
                        await self._branch_ended(branch)
                    else:
                        await self._on_response(branch, response)
                    continue
                deadline = self._next_deadline()
                if deadline <= self.proxy.now():
                    await self._expire_fr_timers()
                    continue
                if self._alarm is None:
                    self._alarm = self.proxy.transactions.alarm(self._wake)
                self._alarm.set(deadline)
                # Parked until `_wake` (a branch's event, or the alarm at `deadline`), here
                # rather than in a coroutine of its own: each resumption passes every frame
                # of the task down to the one that waits. Woken, the loop looks again: the
                # timers are expired only once one is due (the alarm's wake).
                self._parked = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._unpark)
        finally:
            if self._alarm is not None:
                self._alarm.close()
                self._alarm = None

    def _next_deadline(self) -> float:
        # A loop rather than min() over a generator: it runs at each park and provisional.
        deadline = math.inf
        for b in self.branches:
            if not b.ended and (b.response is None or b.stop_at < math.inf):
                deadline = min(deadline, b.fr_deadline, b.stop_at)
        return deadline

    def _deadlines_changed(self) -> None:
        if self._parked is not None and self._alarm is not None:
            self._alarm.set(self._next_deadline())

    async def _expire_fr_timers(self) -> None:
        now = self.proxy.now()
        for branch in self.branches:
            if branch.ended:
                continue
            if branch.stop_at <= now:
                branch.stop_at = math.inf
                self._stop_branch(branch)
            if branch.pending and branch.fr_deadline <= now:
                logger.info(
                    "%s branch %s: fr timer fired, local 408", self.log_prefix(), branch.branch
                )
                branch.fr_deadline = math.inf
                if branch.provisional:
                    self._send_cancel(branch)
                else:
                    self._stop_branch(branch)
                await self._on_response(
                    branch, build_response(branch.request, 408, to_tag=self.to_tag)
                )

    def _stop_branch(self, branch: Branch) -> None:
        """Stop a branch's client transaction without a CANCEL (none may be sent yet)."""
        client = branch.client
        if branch.task is None and client is not None:
            client.stop()
            branch.client = None
            if not branch.ended:
                self._post(branch, None)
        else:
            branch.scope.cancel()

    def _release_clients(self) -> None:
        # The transaction is over (or cancelled from outside): a task-less client
        # transaction still waiting for its answer has nobody to give it to. One that
        # absorbs retransmissions of its final (Timer D/K) may outlive us: it must not keep
        # the call's objects alive through its callbacks (they name its branch and us), nor
        # may the branch name it back: a reference cycle per call that only the garbage
        # collector would free.
        for branch in self.branches:
            if branch.task is None:
                for client in (branch.client, branch.cancel_client):
                    if client is not None:
                        if client.state in _UNANSWERED:
                            client.stop()
                        client.detach()
            branch.client = branch.cancel_client = None

    def _end_branch(self, branch: Branch) -> None:
        branch.ended = True
        self._live_branches -= 1
        if not self._live_branches:
            self._wake()

    async def _branch_ended(self, branch: Branch) -> None:
        if branch.ended:
            return
        self._end_branch(branch)
        if branch.pending:
            # Stopped without a final response: cancelled before any provisional one
            # (Kamailio's cancel_b_method 0: as if the branch had answered 487).
            status = 487 if self.cancelled else 408
            await self._on_response(
                branch, build_response(branch.request, status, to_tag=self.to_tag)
            )

    def _take_response(self, branch: Branch, response: Response, *, noted: bool = False) -> bool:
        """What every provisional and 2xx response gets, with no route to run: forwarded
        upstream at once (RFC 3261 §16.7). Returns whether it was one of those.

        `noted`: the provisional was noted before an onreply route ran."""
        status = response.status
        pending = branch.response is None
        if not pending and not (status // 100 == 2 and self.request.method == "INVITE"):
            return True  # a late answer on a branch we already closed (its local 408, say)
        if status < 200:
            if not noted:
                self._note_provisional(branch, status)
            if self.is_cancelled():
                self._send_cancel(branch)
            elif status > 100 and not self.final_sent:
                self._send_upstream(response.without_first_value("via"))
            return True
        if status // 100 != 2:
            return False
        if pending:
            # Its timers stop: the loop's next deadline can only be later, and an alarm
            # that fires early only has the loop look again (no call to move it here).
            branch.response = response
        # RFC 3261 §16.7 step 5: every 2xx goes upstream at once, then the other branches
        # are CANCELled (step 10).
        self._send_upstream(response.without_first_value("via"))
        self._cancel_pending_branches()
        return True

    def _note_provisional(self, branch: Branch, status: int) -> None:
        # The client transaction got it, whatever the onreply route decides: a CANCEL may
        # go now (RFC 3261 §9.1), and Timer C runs (§16.7 step 2: not for a 100).
        branch.provisional = True
        if self.request.method == "INVITE" and status > 100:
            timer_c = self.proxy.now() + self.fr_inv_timeout
            # Later, as usual (fr_inv_timeout outlasts fr_timeout): the alarm, set earlier,
            # wakes the loop early, which sets it again; only an earlier one moves it now.
            moved_earlier = timer_c < branch.fr_deadline
            branch.fr_deadline = timer_c
            if moved_earlier:
                self._deadlines_changed()

    async def _on_response(self, branch: Branch, response: Response) -> None:
        status = response.status
        if not branch.pending and not (status // 100 == 2 and self.request.method == "INVITE"):
            return  # a late answer on a branch we already closed (its local 408, say)
        if self.reply_route is not None:
            if status < 200:
                self._note_provisional(branch, status)
            keep: list[bool] = []
            await self.run_route(self._run_reply_route, branch, response, keep)
            if keep == [False] and status < 200:
                if self.is_cancelled():
                    self._send_cancel(branch)
                return
        if self._take_response(branch, response, noted=self.reply_route is not None):
            return
        branch.response = response
        if status // 100 == 6:
            self._cancel_pending_branches()
        await self._finish_if_all_answered()

    async def _run_reply_route(self, branch: Branch, response: Response, keep: list[bool]) -> None:
        assert self.reply_route is not None
        keep.append(await self.reply_route(self, branch, response))

    async def _finish_if_all_answered(self) -> None:
        if self.final_sent or any(b.pending for b in self.branches):
            return
        answers = [b.response for b in self.branches if b.response is not None]
        best = merge_challenges(best_response(answers), answers)
        await self._fail(best)

    async def _fail(self, best: Response, *, via_is_ours: bool = True) -> None:
        """No success: give the failure route its turn, else send `best` upstream.

        `best` is a branch's answer, whose top Via is ours, unless `via_is_ours` is False
        (our own 408 when the request route ran out of time before any branch).
        """
        route, self.failure_route = self.failure_route, None
        if route is not None and not self.cancelled:
            branches_before = len(self.branches)
            await self.run_route(route, self, best)
            if self.final_sent or len(self.branches) > branches_before:
                return
            if self.is_cancelled():  # CANCELled while the failure route ran
                await self.reply(487, "Request Terminated")
                return
        status = forwarded_status(best.status)
        if status != best.status:
            await self.reply(status, "Next Hop Unavailable")
        elif not via_is_ours:
            self._send_upstream(best, generated=True)
        else:
            self._send_upstream(best.without_first_value("via"))

    def _send_upstream(self, response: Response, *, generated: bool = False) -> None:
        counters = self.proxy.counters
        sent = counters.replies_generated if generated else counters.replies_forwarded
        sent[STATUS_CLASSES[response.status // 100]] += 1
        counters.replies_sent[response.status] += 1
        try:
            # Not awaited: a response that cannot go out at once (TCP, a full socket) goes
            # from the server transaction's loop, and its failure ends that transaction
            # (RFC 3261 §17.2.4); nothing here could do more about it.
            self.server.respond_now(response)
        except TransactionError as exc:
            logger.warning("%s response %d not sent: %s", self.log_prefix(), response.status, exc)
        if response.status >= 200:
            self.proxy.note_answered()

    def _cancel_pending_branches(self) -> None:
        for branch in self.branches:
            if branch.response is None and not branch.ended:
                self._send_cancel(branch)

    def _send_cancel(self, branch: Branch) -> None:
        cancel = self._cancel_for(branch)
        if cancel is None:
            return
        assert branch.destination is not None
        if branch.destination.transport == "udp":
            branch.cancel_client = self.proxy.transactions.start_client(
                cancel,
                branch.destination,
                on_response=lambda _client, _response: None,
                on_end=lambda _client, failure: self._cancel_ended(branch, failure),
            )
        else:
            self.server.nursery.start_soon(
                self._run_cancel, branch, cancel, name=f"NICT CANCEL {branch.branch}"
            )

    def _cancel_ended(self, branch: Branch, failure: BaseException | None) -> None:
        branch.cancel_client = None
        if failure is not None:
            logger.info("%s CANCEL not answered: %s", self.log_prefix(), failure)

    def _cancel_for(self, branch: Branch) -> Request | None:
        """Mark `branch` as cancelled; the CANCEL to send, if it needs one."""
        if branch.cancel_sent:
            return None
        branch.cancel_sent = True
        if not branch.provisional:
            # RFC 3261 §9.1: no CANCEL before a provisional response; stop the branch.
            self._stop_branch(branch)
            return None
        # RFC 3261 §9.1: if the INVITE gets no final answer in 64*T1 after the CANCEL, the
        # branch is over: its client transaction is stopped then.
        stop_at = self.proxy.now() + 64 * self.proxy.transactions.timers.t1
        if branch.task is None:
            branch.stop_at = stop_at
            self._deadlines_changed()
        else:
            branch.scope.deadline = stop_at
        return build_cancel(branch.request)

    async def give_up(self, status: int, reason: str, headers: tuple[tuple[str, str], ...]) -> None:
        """Answer now, whatever runs: stop the routes and their ops, CANCEL the ringing
        branches, and send `status` upstream (shutdown, once the grace has passed).

        Returns once the answer and every CANCEL have left (or failed to).
        """
        if self.final_sent:
            return
        self.cancelled = True  # no failure route, no resume route from now on
        for running in self._routes:
            running.scope.cancel()
        for branch in self.branches:
            if branch.pending and not branch.ended:
                if branch.destination is not None and branch.destination.transport == "udp":
                    self._send_cancel(branch)  # sent before it returns
                    continue
                cancel = self._cancel_for(branch)
                if cancel is not None:
                    assert branch.destination is not None
                    await self.server.nursery.start(
                        self._run_cancel, branch, cancel, name=f"NICT CANCEL {branch.branch}"
                    )
        await self.reply(status, reason, headers)

    async def _run_cancel(
        self,
        branch: Branch,
        cancel: Request,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        assert branch.destination is not None
        branch.cancel_task = trio.lowlevel.current_task()
        sent = _Started(branch, cancel=True, task_status=task_status)
        try:
            await self.proxy.transactions.run_client(
                cancel,
                branch.destination,
                on_response=lambda _client, _response: None,
                task_status=sent,
            )
        except (TransactionTimeout, TransportFailure) as exc:
            logger.info("%s CANCEL not answered: %s", self.log_prefix(), exc)
        finally:
            branch.cancel_task = branch.cancel_client = None
        if not sent.done:  # it never left: whoever waits for it must not wait forever
            task_status.started()


class _Started:
    """The ``task_status`` of a branch's client transaction: keeps the transaction on the
    branch once it has sent its request, and passes the news on to a task's own
    ``task_status``."""

    __slots__ = ("branch", "cancel", "done", "task_status")

    def __init__(
        self,
        branch: Branch,
        *,
        cancel: bool,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.branch = branch
        self.cancel = cancel
        self.task_status = task_status
        self.done = False

    def started(self, value: ClientTransaction | None = None) -> None:
        if self.cancel:
            self.branch.cancel_client = value
        else:
            self.branch.client = value
        self.done = True
        self.task_status.started()
