"""The transaction layer: matching, dispatch, the transactions nursery, statistics.

Theory of operation
-------------------
:meth:`TransactionLayer.receive` is the transport's ``on_message``. It is synchronous and
does dict lookups only (RFC 3261 §17.1.3 and §17.2.3 keys, built from fields the parser
already validated): a response goes to its client transaction, a request to its server
transaction, where it is absorbed as a retransmission; a new request starts a server
transaction task in the nursery :meth:`serve` owns. What matches nothing and makes nothing
(an ACK for a 2xx, a response whose client transaction has ended) goes to ``on_stray``.

Client transactions run in the task that calls :meth:`run_client`; server transactions are
tasks of their own (see ``_server.py``) while they have work. Neither has a timer task:
every timer is the deadline of a cancel scope in the transaction's own task, except for a
server transaction that is answered and whose ``on_request`` has returned: it is *held*,
and the one timers loop of :meth:`serve` (a heap of deadlines) runs its timers, so that
the tens of thousands a busy proxy keeps for 64*T1 after their final are neither tasks nor
heavy, and a shutdown has nothing of theirs to cancel.

Load is bounded before anything is created (``_limits.py``): pike drops new requests
beyond a source's rate, and beyond ``max_transactions`` live server transactions a new
request gets a stateless 503.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from triosip import ids
from triosip.sip import MAGIC_COOKIE, Response, build_response
from triosip.transport.base import TransportError, response_destination

from ._client import ClientTransaction
from ._errors import TransactionError
from ._fsm import ServerInput, ServerState
from ._keys import client_key, invite_key, server_key
from ._limits import LoadLimits, Pike
from ._server import ServerTransaction
from ._timers import TimerConfig

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from triosip.sip import Request
    from triosip.transport.base import Address, Inbound, TcpConnection

    from ._keys import ClientKey, ServerKey
    from ._port import Counted, Timed, Transport

logger = logging.getLogger(__name__)

# Sends the timers loop makes for held transactions and stateless answers when the
# socket cannot take them at once (TCP, a full UDP buffer); beyond, they are dropped like
# a lost datagram.
SEND_LATER_CAPACITY = 1024

# The timers loop wakes at the end of the TIMER_SLACK-long slot a deadline falls in, and
# fires everything due by then: the timers of a busy proxy's transactions (a few per call,
# hundreds a second) share wake-ups instead of costing one each (a wake is a cancel scope
# and a trip through the scheduler, ~30 µs). RFC 3261's timers are no finer than T1/4.
TIMER_SLACK = 0.01


def _slot_end(when: float) -> float:
    return math.ceil(when / TIMER_SLACK) * TIMER_SLACK if math.isfinite(when) else when


@dataclass(frozen=True, slots=True)
class TransactionStatistics:
    """A snapshot of the layer's counters (``TransactionLayer.statistics``).

    Attributes:
        server_active: server transactions whose task is running.
        server_held: server transactions answered and kept, without a task, for their
            timers (absorbing retransmissions, RFC 3261 §17.2).
        server_total: server transactions created.
        client_active: client transactions running.
        client_total: client transactions started.
        ist_total: INVITE server transactions created.
        nist_total: non-INVITE server transactions created.
        ict_total: INVITE client transactions started.
        nict_total: non-INVITE client transactions started.
        retransmissions_sent: requests (Timer A/E) and responses (Timer G, or answering a
            retransmitted request) sent again, and ACKs re-sent for retransmitted finals.
        retransmissions_absorbed: retransmitted requests, ACKs and final responses absorbed.
        timeouts: Timer B, F and H firings.
        strays: responses that matched no client transaction (passed to ``on_stray``);
            the ACKs of 2xx passed there too are no strays: a proxy relays them.
        handler_errors: exceptions from ``on_request`` or from tasks in a transaction's
            nursery.
        dropped: requests for which nothing produced a final response.
        rejected_overload: new requests answered 503 statelessly: ``max_transactions``
            were held.
        rate_limited: new requests dropped by pike: their source was over its rate.
    """

    server_active: int
    server_total: int
    client_active: int
    client_total: int
    ist_total: int
    nist_total: int
    ict_total: int
    nict_total: int
    retransmissions_sent: int
    retransmissions_absorbed: int
    timeouts: int
    strays: int
    handler_errors: int
    dropped: int
    # Defaulted, so that snapshots built by hand before they existed still build.
    server_held: int = 0
    rejected_overload: int = 0
    rate_limited: int = 0


class _Counters:
    __slots__ = (
        "dropped",
        "handler_errors",
        "ict_total",
        "ist_total",
        "nict_total",
        "nist_total",
        "rate_limited",
        "rejected_overload",
        "retransmissions_absorbed",
        "retransmissions_sent",
        "strays",
        "timeouts",
    )

    def __init__(self) -> None:
        self.ist_total = self.nist_total = self.ict_total = self.nict_total = 0
        self.retransmissions_sent = self.retransmissions_absorbed = 0
        self.timeouts = self.strays = self.handler_errors = self.dropped = 0
        self.rejected_overload = self.rate_limited = 0


class TransactionLayer:
    """RFC 3261 §17 client and server transactions over one transport layer.

    Args:
        transport: the transport layer (``send``, ``send_nowait``).
        timers: T1, T2, T4 and what derives from them.
        on_request: runs as the body of each new server transaction's task, inside
            ``st.nursery``; see :meth:`receive`.
        on_stray: called synchronously with what matches no transaction and creates none:
            an ACK matching no INVITE server transaction (the ACK of a 2xx), an ACK in an
            IST's Accepted state (RFC 6026), a response matching no client transaction.
            Must not block.
        limits: the cap on server transactions and pike (``LoadLimits``).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        timers: TimerConfig = TimerConfig(),  # noqa: B008 - frozen, so one shared default is fine
        on_request: Callable[[ServerTransaction], Awaitable[None]],
        on_stray: Callable[[Inbound], None],
        limits: LoadLimits = LoadLimits(),  # noqa: B008 - frozen, as timers
    ) -> None:
        self._transport = transport
        self._timers = timers
        self.limits = limits
        self._on_request = on_request
        self._on_stray = on_stray
        self._servers: dict[ServerKey, ServerTransaction] = {}
        self._clients: dict[ClientKey, ClientTransaction] = {}
        # Insertion-ordered sets: tasks running, and every server transaction not over
        # (running, or held after its task ended): the cap counts the latter.
        self._running: dict[ServerTransaction, None] = {}
        self._live: dict[ServerTransaction, None] = {}
        self._nursery: trio.Nursery | None = None
        self._counters = _Counters()
        self._pike = Pike(limits.pike_rate, limits.pike_sources) if limits.pike_rate else None
        self._overloaded = False
        # The timers of held transactions: (deadline, seq, transaction); an entry whose
        # seq is no longer the transaction's is stale and skipped.
        self._heap: list[tuple[float, int, Timed]] = []
        self._seq = 0
        self._timers_wait: trio.CancelScope | None = None
        self._timers_wake = math.inf  # its deadline, kept here: a scope's is a property
        self._later: deque[
            tuple[bytes, Address, Address | None, TcpConnection | None, Timed | None]
        ] = deque()
        self._port = _Port(self)

    # --- the public surface --------------------------------------------------------------

    @property
    def timers(self) -> TimerConfig:
        """T1, T2, T4 and what derives from them, as given (fixed for the layer's life)."""
        return self._timers

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the long-lived transactions nursery; each server transaction is a task in it.

        Never returns; in its own task it runs the timers of held transactions. Cancelling
        it cancels every server transaction and forgets the held ones.

        Args:
            task_status: ``started()`` once :meth:`receive` can start transactions.
        """
        # The run's clock, read directly: trio.current_time() costs two more calls.
        self._port.now = trio.lowlevel.current_clock().current_time
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await self._run_held_timers()
            finally:
                self._nursery = None
                self._forget_held()

    def receive(self, inbound: Inbound) -> None:
        """Dispatch one message from the transport (its ``on_message``). Synchronous.

        * A response goes to its client transaction by (branch, CSeq method) (§17.1.3), or
          to ``on_stray``.
        * A request matching a live server transaction (§17.2.3, with the RFC 2543
          fallback) is a retransmission: it is absorbed, the last response re-sent where the
          machine says so; the route never runs twice. An ACK moves an IST from Completed
          to Confirmed.
        * An ACK matching nothing goes to ``on_stray``.
        * Any other request creates a server transaction and starts its task, named after
          it, in the transactions nursery. An INVITE gets a 100 Trying at once, before
          ``on_request`` runs.

        Args:
            inbound: the message with its source, local address and TCP connection.
        """
        message = inbound.message
        if isinstance(message, Response):
            # §17.1.3: by the top Via's branch and the CSeq method. No match: §17.1.1.2 and
            # RFC 6026 §8.4 pass it to the core (a retransmitted 2xx after the ICT ended is
            # forwarded by the proxy; anything else is dropped there).
            branch = message.top_via.branch  # response_key(), inline
            client = (
                self._clients.get((branch, message.cseq.method)) if branch is not None else None
            )
            if client is None:
                self._pass_stray(inbound)
            else:
                client._receive(message)
            return
        request = message
        key_ = server_key(request)
        server = self._servers.get(key_)
        if request.method == "ACK":
            # §17.2.3: for an RFC 2543 ACK, the To tag must also be the one of the response
            # it acknowledges (which tells the ACK of a 2xx from that of a non-2xx).
            if server is not None and server.rfc2543:
                final = server.final_response
                if final is None or final.to.tag != request.to.tag:
                    server = None
            if server is None:
                self._pass_stray(inbound)
            else:
                server._receive(inbound, ServerInput.ACK)
            return
        if server is not None:
            # §17.2.3: "the request is a retransmission" of the one that made it.
            server._receive(inbound, ServerInput.REQUEST)
            return
        # §17.2: "a new server transaction MUST be constructed" for a request that matches
        # none (but an ACK, above). It runs as a task of the transactions nursery.
        nursery = self._nursery
        if nursery is None:
            logger.warning(
                "%s Call-ID %s: dropped, the transaction layer is not serving",
                request.method,
                request.call_id,
            )
            self._counters.dropped += 1
            return
        pike = self._pike
        if pike is not None and not pike.allow(inbound.source.host, self._port.now()):
            self._counters.rate_limited += 1
            return
        if len(self._live) >= self.limits.max_transactions and not self._beyond_cap(
            inbound, request
        ):
            return
        if self._overloaded:
            self._overloaded = False
            logger.warning("taking new transactions again (%d held)", len(self._live))
        server = self._new_server(inbound, request, key_)
        nursery.start_soon(server._run, name=server.name)

    def find_invite(self, cancel: Request) -> ServerTransaction | None:
        """The live INVITE server transaction a CANCEL refers to (RFC 3261 §9.2).

        Args:
            cancel: the CANCEL request.

        Returns:
            The INVITE server transaction, or None (the proxy then answers 481).
        """
        # §9.2: "the same as [§17.2.3] ... but the method of the request being cancelled
        # is INVITE"; only a live (not yet terminated) IST can still be cancelled.
        server = self._servers.get(invite_key(cancel))
        if server is None or not server.is_invite:
            return None
        return server

    async def run_client(
        self,
        request: Request,
        destination: Address,
        *,
        on_response: Callable[[ClientTransaction, Response], None],
        connection: TcpConnection | None = None,
        wait_in_accepted: bool = True,
        task_status: trio.TaskStatus[ClientTransaction] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run one client transaction (RFC 3261 §17.1) to its end, in the caller's task.

        Sends ``request``, retransmits it over UDP (Timer A doubling without cap for an
        INVITE; Timer E doubling up to T2 otherwise), calls ``on_response`` synchronously
        for every response it passes up (provisionals, the final, and in the ICT's Accepted
        state the retransmitted 2xx), sends the ACK of a non-2xx final itself (§17.1.1.3)
        and absorbs that final's retransmissions. Starts no task.

        Args:
            request: the request, whose top Via (pushed by the proxy) has a fresh branch
                (:meth:`new_branch`).
            destination: where to send it.
            on_response: called with each response passed up. An exception from it ends
                the transaction and is raised from here.
            connection: the TCP connection to send it on, if any.
            wait_in_accepted: for an INVITE, whether the transaction stays in Accepted
                for Timer M (64*T1) after a 2xx, passing the 2xx retransmissions to
                ``on_response`` (RFC 6026 §7.2, the default). With False it ends with the
                first 2xx, as RFC 3261 §17.1.1.2 had it, and returns: retransmissions then
                match nothing and go to ``on_stray`` (a proxy forwards them statelessly,
                RFC 3261 §16.7 step 2), and the caller's task, with all it holds, need not
                live for 32 s after each call set up.
            task_status: ``started(client_transaction)`` right after the first
                transmission.

        Raises:
            TransactionTimeout: Timer B or F fired: no final response.
            TransportFailure: the transport could not send the request or the ACK.
            TransactionError: the request has no branch, or its branch is in use.

        Cancelling the calling task stops the transaction at once; no CANCEL is sent (the
        proxy sends CANCEL as a transaction of its own, §9.1).
        """
        client = self._new_client(
            request,
            destination,
            connection=connection,
            on_response=on_response,
            wait_in_accepted=wait_in_accepted,
            on_end=None,
        )
        try:
            await client._run(task_status)
        finally:
            client._close()

    def alarm(self, fire: Callable[[], None]) -> Alarm:
        """A deadline for the TU that this layer's timers loop serves: `fire` is called
        (synchronously, from the loop) once the deadline set with ``Alarm.set`` passes,
        at most `TIMER_SLACK` late. A task that waits for its TU's timers this way needs no
        cancel scope of its own (a proxy transaction waiting for its branches' answers)."""
        return Alarm(self._schedule, fire)

    def start_client(
        self,
        request: Request,
        destination: Address,
        *,
        on_response: Callable[[ClientTransaction, Response], None],
        on_end: Callable[[ClientTransaction, BaseException | None], None],
        wait_in_accepted: bool = True,
    ) -> ClientTransaction:
        """Start a client transaction over UDP that runs without a task of its own.

        The same machine as :meth:`run_client`, run as a record: the request is sent now,
        responses are passed to ``on_response`` from :meth:`receive`, and its timers (A, B,
        D, E, F, K) are run by the layer's one timers loop, like those of a held server
        transaction. A proxy's branch then costs no task, no cancel scope and no wake-up of
        its own. Sends the socket cannot take at once go out from the timers loop.

        Args:
            request: as for :meth:`run_client`.
            destination: a UDP destination (a stream's connect must be awaited by a task
                that owns it: use :meth:`run_client`).
            on_response: as for :meth:`run_client`.
            on_end: called once when the transaction terminates by itself, with None, or
                with the ``TransactionTimeout`` / ``TransportFailure`` /
                ``on_response``'s exception that ended it; not after
                ``ClientTransaction.stop``.
            wait_in_accepted: as for :meth:`run_client`.

        Returns:
            The transaction, already sent. Whoever started it stops it with
            ``ClientTransaction.stop`` when it no longer wants it (the layer stops those
            left at shutdown).

        Raises:
            TransactionError: the request has no branch, its branch is in use, or the
                destination is not UDP.
        """
        if destination.transport != "udp":
            raise TransactionError(f"start_client is for UDP, not {destination.transport}")
        client = self._new_client(
            request,
            destination,
            connection=None,
            on_response=on_response,
            wait_in_accepted=wait_in_accepted,
            on_end=on_end,
        )
        client._start()
        return client

    def _new_client(
        self,
        request: Request,
        destination: Address,
        *,
        connection: TcpConnection | None,
        on_response: Callable[[ClientTransaction, Response], None],
        wait_in_accepted: bool,
        on_end: Callable[[ClientTransaction, BaseException | None], None] | None,
    ) -> ClientTransaction:
        """A client transaction, registered and counted, before its first send."""
        # The branch is the client transaction's identity (§17.1.3); two transactions on one
        # branch would steal each other's responses.
        key = client_key(request)
        if key is None:
            raise TransactionError(f"{request.method} has no branch in its top Via")
        if key in self._clients:
            raise TransactionError(f"{request.method} {key[0]}: branch already in use")
        client = ClientTransaction(
            self._port,
            request,
            destination,
            key=key,
            connection=connection,
            on_response=on_response,
            wait_in_accepted=wait_in_accepted,
            on_end=on_end,
        )
        # Registered before the first send: over TCP a response can be read before send()
        # returns.
        self._clients[key] = client
        counters = self._counters
        if client.is_invite:
            counters.ict_total += 1
        else:
            counters.nict_total += 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s Call-ID %s: sending to %s", client.name, request.call_id, destination)
        return client

    def new_branch(self) -> str:
        """A fresh branch: the RFC 3261 magic cookie and 64 random bits (§8.1.1.7)."""
        return MAGIC_COOKIE + ids.token_hex(8)

    def server_transactions(self) -> list[ServerTransaction]:
        """The server transactions not over, oldest first (for the MI): those whose task
        runs and those held after their final response."""
        return list(self._live)

    def pike_sources(self) -> int:
        """How many sources pike has a bucket for (0 without pike)."""
        return len(self._pike) if self._pike is not None else 0

    def client_transactions(self) -> list[ClientTransaction]:
        """The client transactions running, oldest first (for the MI)."""
        return list(self._clients.values())

    def statistics(self) -> TransactionStatistics:
        """A snapshot of the layer's counters."""
        counters = self._counters
        return TransactionStatistics(
            server_active=len(self._running),
            server_held=len(self._live) - len(self._running),
            server_total=counters.ist_total + counters.nist_total,
            client_active=len(self._clients),
            client_total=counters.ict_total + counters.nict_total,
            ist_total=counters.ist_total,
            nist_total=counters.nist_total,
            ict_total=counters.ict_total,
            nict_total=counters.nict_total,
            retransmissions_sent=counters.retransmissions_sent,
            retransmissions_absorbed=counters.retransmissions_absorbed,
            timeouts=counters.timeouts,
            strays=counters.strays,
            handler_errors=counters.handler_errors,
            dropped=counters.dropped,
            rejected_overload=counters.rejected_overload,
            rate_limited=counters.rate_limited,
        )

    # --- for the transactions ------------------------------------------------------------

    def _new_server(self, inbound: Inbound, request: Request, key: ServerKey) -> ServerTransaction:
        # server_key() gave an RFC 3261 request a key of 4 items, the first its branch.
        rfc2543 = len(key) != 4
        keys: tuple[ServerKey, ...] = (key,)
        if not rfc2543:
            branch = key[0]
            assert isinstance(branch, str)
        else:
            if request.method == "INVITE":
                # The second key is what its ACK and CANCEL will carry (§17.2.3, §9.2).
                keys = (key, invite_key(request))
            via_branch = request.top_via.branch
            if via_branch is None:
                branch = f"rfc2543-{request.call_id}-{request.cseq.number}"
            else:
                branch = via_branch
        server = ServerTransaction(
            self._port, inbound, request, keys=keys, branch=branch, rfc2543=rfc2543
        )
        servers = self._servers
        for each in keys:
            servers[each] = server
        self._running[server] = None
        self._live[server] = None
        if server.is_invite:
            self._counters.ist_total += 1
        else:
            self._counters.nist_total += 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s Call-ID %s: new from %s", server.name, request.call_id, inbound.source)
        return server

    def _forget_server(self, server: ServerTransaction) -> None:
        # A newer transaction may own the key by now (a request retransmitted after this one
        # terminated makes a new one): only remove our own entries.
        servers = self._servers
        for key in server._keys:
            if servers.get(key) is server:
                del servers[key]
        if server._task_ended:
            self._live.pop(server, None)

    def _server_ended(self, server: ServerTransaction) -> None:
        self._running.pop(server, None)
        if server.state is ServerState.TERMINATED:
            self._live.pop(server, None)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s: task ended in %s", server.name, server.state.name)

    # --- overload ------------------------------------------------------------------------

    def _beyond_cap(self, inbound: Inbound, request: Request) -> bool:
        """A new request while ``max_transactions`` are held: whether to take it anyway.

        A CANCEL of an INVITE still ringing is taken (one per INVITE at most, §9.2: the
        caller must be able to stop it); any other CANCEL gets a stateless 481, as it
        would from the proxy. Everything else gets a stateless 503 with Retry-After
        (RFC 3261 §21.5.4): nothing is created, and the answer goes out without waiting.
        """
        if request.method == "CANCEL":
            invite = self.find_invite(request)
            if invite is not None and invite.state is ServerState.PROCEEDING:
                return True
            self._answer_statelessly(inbound, request, 481, ())
            return False
        self._counters.rejected_overload += 1
        if not self._overloaded:
            self._overloaded = True
            logger.warning(
                "%d server transactions held: new requests get 503 (Call-ID %s first)",
                len(self._live),
                request.call_id,
            )
        retry_after = (("Retry-After", str(self.limits.retry_after)),)
        self._answer_statelessly(inbound, request, 503, retry_after)
        return False

    def _answer_statelessly(
        self, inbound: Inbound, request: Request, status: int, headers: tuple[tuple[str, str], ...]
    ) -> None:
        response = build_response(request, status, to_tag=ids.token_hex(6), headers=headers)
        destination = response_destination(request.top_via, inbound.source)
        data = bytes(response)
        reliable = inbound.connection is not None or destination.transport != "udp"
        if reliable or not self._transport.send_nowait(data, destination, local=inbound.local):
            self._send_later(data, destination, inbound.local, inbound.connection, None)

    # --- held transactions ---------------------------------------------------------------

    def _hold(self, server: ServerTransaction) -> None:
        # Answered, its on_request returned: its timers are ours from now on.
        server._held = True
        self._schedule(server)

    def _schedule(self, timed: Timed) -> None:
        """Have the timers loop wake for the earliest deadline of ``timed``: its deadlines
        changed (or it has just fired)."""
        deadlines = timed._deadlines
        when = min(deadlines.values()) if deadlines else math.inf
        at = timed._heap_at
        if when >= at:
            if when == at:
                return
            # Later than the entry we have (a 1xx disarmed Timer A and B, a final Timer E):
            # that entry goes stale now, rather than waking the loop for nothing.
            timed._heap_seq = 0
            timed._heap_at = math.inf
            heap = self._heap
            if heap and heap[0][2] is timed:
                # The loop sleeps until this entry's slot, perhaps: let it sleep on.
                self._drop_stale_top()
            if not deadlines:
                return
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, timed))
        timed._heap_at = when
        timed._heap_seq = self._seq
        wait = self._timers_wait
        if wait is not None and when < self._timers_wake:
            wake = _slot_end(when)
            if wake < self._timers_wake:
                wait.deadline = self._timers_wake = wake

    def _drop_stale_top(self) -> None:
        # Stale entries at the top of the heap are popped now, and the loop, if it sleeps
        # until then, wakes at the next live entry's slot instead: an entry's staleness
        # is otherwise found only when the loop wakes for it.
        heap = self._heap
        while heap and heap[0][1] != heap[0][2]._heap_seq:
            heapq.heappop(heap)
        wait = self._timers_wait
        if wait is not None and not self._later:
            wake = _slot_end(heap[0][0]) if heap else math.inf
            if wake > self._timers_wake:
                wait.deadline = self._timers_wake = wake

    def _send_later(
        self,
        data: bytes,
        destination: Address,
        local: Address | None,
        connection: TcpConnection | None,
        timed: Timed | None,
    ) -> None:
        if len(self._later) >= SEND_LATER_CAPACITY:
            logger.debug("send queue full: a response to %s not sent", destination)
            return
        self._later.append((data, destination, local, connection, timed))
        wait = self._timers_wait
        if wait is not None:
            wait.deadline = self._timers_wake = -math.inf

    async def _run_held_timers(self) -> None:
        clock = self._port.now
        heap = self._heap
        later = self._later
        while True:
            while later:
                data, destination, local, connection, timed = later.popleft()
                if timed is not None and timed._is_over():
                    continue
                try:
                    await self._transport.send(
                        data, destination, connection=connection, local=local
                    )
                except TransportError as exc:
                    if timed is not None:
                        timed._transport_error(exc)
                    else:
                        logger.info("stateless response to %s not sent: %s", destination, exc)
            # Entries gone stale meanwhile (a 1xx disarmed Timer A and B, a final Timer E)
            # are dropped from the top now, rather than woken for at their time.
            while heap and heap[0][1] != heap[0][2]._heap_seq:
                heapq.heappop(heap)
            deadline = _slot_end(heap[0][0]) if heap else math.inf
            if deadline > clock():
                self._timers_wake = deadline
                with trio.move_on_at(deadline) as self._timers_wait:
                    await trio.sleep_forever()
                self._timers_wait = None
            now = clock()
            while heap and heap[0][0] <= now:
                _, seq, timed = heapq.heappop(heap)
                if seq == timed._heap_seq:
                    timed._heap_at = math.inf
                    timed._fire_timers(now)

    def _forget_held(self) -> None:
        # Shutdown: the held transactions are records, not tasks: forgetting them is a
        # loop over a list, whatever their number.
        self._heap.clear()
        self._later.clear()
        for server in [server for server in self._live if server._held]:
            server._terminate()
        for client in [client for client in self._clients.values() if client._on_end]:
            client.stop()

    def _forget_client(self, key: ClientKey, client: ClientTransaction) -> None:
        if self._clients.get(key) is client:
            del self._clients[key]

    def _count(self, event: Counted) -> None:
        counters = self._counters
        name = event.value
        setattr(counters, name, getattr(counters, name) + 1)

    def _pass_stray(self, inbound: Inbound) -> None:
        if isinstance(inbound.message, Response):
            self._counters.strays += 1
        try:
            self._on_stray(inbound)
        except Exception:
            # on_stray runs in the transport's receive loop, which must not die of it.
            logger.exception("on_stray raised for a message from %s", inbound.source)
            self._counters.handler_errors += 1


class Alarm:
    """A TU's deadline served by the layer's timers loop (``TransactionLayer.alarm``).

    A record like a held transaction (`Timed`): one entry in the layer's heap, moved
    earlier at once, later lazily (the loop wakes at the old deadline and reschedules).
    """

    __slots__ = ("_deadlines", "_fire", "_heap_at", "_heap_seq", "_schedule")

    def __init__(self, schedule: Callable[[Timed], None], fire: Callable[[], None]) -> None:
        self._schedule = schedule
        self._fire: Callable[[], None] | None = fire
        self._deadlines: dict[None, float] = {}
        self._heap_at = math.inf
        self._heap_seq = 0

    def set(self, when: float) -> None:
        """Fire at `when` (a trio time; infinite: not at all), instead of any earlier set."""
        if math.isinf(when):
            self._deadlines.clear()
            return
        self._deadlines[None] = when
        if when < self._heap_at:  # a later deadline: the loop wakes early and reschedules
            self._schedule(self)

    def close(self) -> None:
        """Never fire again, and let go of the callback (the heap may hold the alarm a
        while longer: not what the callback would keep alive)."""
        self._deadlines.clear()
        self._fire = None

    def _fire_timers(self, now: float) -> None:
        when = self._deadlines.get(None)
        if when is None:
            return
        if when > now:
            self._schedule(self)
            return
        del self._deadlines[None]
        if self._fire is not None:
            self._fire()

    def _transport_error(self, exc: TransportError) -> None:
        raise AssertionError("an alarm sends nothing")  # pragma: no cover

    def _is_over(self) -> bool:
        return self._fire is None


class _Port:
    """The port the transactions of one layer get: ``ClientPort`` and ``ServerPort``.

    One per layer, shared: each call names its transaction. Its operations are the
    layer's own methods, bound once here, so that the port costs no call of its own on
    the hot path; what else the layer has stays out of the transactions' reach.
    """

    __slots__ = (
        "count",
        "forget_client",
        "forget_server",
        "handle",
        "hold",
        "now",
        "pass_stray",
        "schedule",
        "send_later",
        "task_ended",
        "timers",
        "transport",
    )

    def __init__(self, layer: TransactionLayer) -> None:
        # Fixed for the layer's life (``TransactionLayer.timers`` is read-only).
        self.timers: TimerConfig = layer.timers
        self.transport: Transport = layer._transport
        self.count: Callable[[Counted], None] = layer._count
        # trio.current_time() until the layer serves (serve() reads the run's clock).
        self.now: Callable[[], float] = trio.current_time
        self.handle: Callable[[ServerTransaction], Awaitable[None]] = layer._on_request
        self.pass_stray: Callable[[Inbound], None] = layer._pass_stray
        self.forget_server: Callable[[ServerTransaction], None] = layer._forget_server
        self.task_ended: Callable[[ServerTransaction], None] = layer._server_ended
        self.hold: Callable[[ServerTransaction], None] = layer._hold
        self.schedule: Callable[[Timed], None] = layer._schedule
        self.send_later: Callable[
            [bytes, Address, Address | None, TcpConnection | None, Timed | None],
            None,
        ] = layer._send_later
        self.forget_client: Callable[[ClientKey, ClientTransaction], None] = layer._forget_client
