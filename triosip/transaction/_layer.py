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
tasks of their own (see ``_server.py``). Neither has a timer task: every timer is the
deadline of a cancel scope in the transaction's own task.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from triosip.sip import MAGIC_COOKIE, Response

from ._client import ClientTransaction
from ._errors import TransactionError
from ._fsm import ServerInput
from ._keys import client_key, has_magic_cookie, invite_key, response_key, server_key
from ._server import ServerTransaction
from ._timers import TimerConfig

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from triosip.sip import Request
    from triosip.transport import Address, Inbound, TcpConnection

    from ._keys import ClientKey, ServerKey

logger = logging.getLogger(__name__)


class Transport(Protocol):
    """What the transaction layer needs of ``triosip.transport.TransportLayer``."""

    def send_nowait(
        self, data: bytes, destination: Address, *, local: Address | None = None
    ) -> bool:
        """Send a UDP datagram now if the socket takes it; False if the caller must wait."""
        ...

    async def send(
        self,
        data: bytes,
        destination: Address,
        *,
        connection: TcpConnection | None = None,
        local: Address | None = None,
    ) -> None:
        """Send a message; raises ``TransportError``."""
        ...


@dataclass(frozen=True, slots=True)
class TransactionStatistics:
    """A snapshot of the layer's counters (``TransactionLayer.statistics``).

    Attributes:
        server_active: server transactions whose task is running.
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
        strays: messages passed to ``on_stray`` (ACK for 2xx, unmatched responses).
        handler_errors: exceptions from ``on_request`` or from tasks in a transaction's
            nursery.
        dropped: requests for which nothing produced a final response.
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


class _Counters:
    __slots__ = (
        "dropped",
        "handler_errors",
        "ict_total",
        "ist_total",
        "nict_total",
        "nist_total",
        "retransmissions_absorbed",
        "retransmissions_sent",
        "strays",
        "timeouts",
    )

    def __init__(self) -> None:
        self.ist_total = self.nist_total = self.ict_total = self.nict_total = 0
        self.retransmissions_sent = self.retransmissions_absorbed = 0
        self.timeouts = self.strays = self.handler_errors = self.dropped = 0


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
    """

    def __init__(
        self,
        transport: Transport,
        *,
        timers: TimerConfig = TimerConfig(),  # noqa: B008 - frozen, so one shared default is fine
        on_request: Callable[[ServerTransaction], Awaitable[None]],
        on_stray: Callable[[Inbound], None],
    ) -> None:
        self._transport = transport
        self.timers = timers
        self._on_request = on_request
        self._on_stray = on_stray
        self._servers: dict[ServerKey, ServerTransaction] = {}
        self._clients: dict[ClientKey, ClientTransaction] = {}
        self._running: dict[ServerTransaction, None] = {}  # insertion-ordered set
        self._nursery: trio.Nursery | None = None
        self._counters = _Counters()

    # --- the public surface --------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the long-lived transactions nursery; each server transaction is a task in it.

        Never returns; cancelling it cancels every server transaction.

        Args:
            task_status: ``started()`` once :meth:`receive` can start transactions.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

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
            key = response_key(message)
            client = self._clients.get(key) if key is not None else None
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
        # The branch is the client transaction's identity (§17.1.3); two transactions on one
        # branch would steal each other's responses.
        key = client_key(request)
        if key is None:
            raise TransactionError(f"{request.method} has no branch in its top Via")
        if key in self._clients:
            raise TransactionError(f"{request.method} {key[0]}: branch already in use")
        client = ClientTransaction(
            self,
            request,
            destination,
            key=key,
            connection=connection,
            on_response=on_response,
            wait_in_accepted=wait_in_accepted,
        )
        # Registered before the first send: over TCP a response can be read before send()
        # returns.
        self._clients[key] = client
        counters = self._counters
        if client.is_invite:
            counters.ict_total += 1
        else:
            counters.nict_total += 1
        logger.debug("%s Call-ID %s: sending to %s", client.name, request.call_id, destination)
        try:
            await client._run(task_status)
        finally:
            client._close()

    def new_branch(self) -> str:
        """A fresh branch: the RFC 3261 magic cookie and 64 random bits (§8.1.1.7)."""
        return MAGIC_COOKIE + secrets.token_hex(8)

    def server_transactions(self) -> list[ServerTransaction]:
        """The server transactions whose task is running, oldest first (for the MI)."""
        return list(self._running)

    def client_transactions(self) -> list[ClientTransaction]:
        """The client transactions running, oldest first (for the MI)."""
        return list(self._clients.values())

    def statistics(self) -> TransactionStatistics:
        """A snapshot of the layer's counters."""
        counters = self._counters
        return TransactionStatistics(
            server_active=len(self._running),
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
        )

    # --- for the transactions ------------------------------------------------------------

    def _new_server(self, inbound: Inbound, request: Request, key: ServerKey) -> ServerTransaction:
        branch = request.top_via.branch
        rfc2543 = not has_magic_cookie(branch)
        keys: tuple[ServerKey, ...] = (key,)
        if rfc2543 and request.method == "INVITE":
            # The second key is what its ACK and CANCEL will carry (§17.2.3, §9.2).
            keys = (key, invite_key(request))
        if branch is None:
            branch = f"rfc2543-{request.call_id}-{request.cseq.number}"
        server = ServerTransaction(
            self, inbound, request, keys=keys, branch=branch, rfc2543=rfc2543
        )
        for each in keys:
            self._servers[each] = server
        self._running[server] = None
        if server.is_invite:
            self._counters.ist_total += 1
        else:
            self._counters.nist_total += 1
        logger.debug("%s Call-ID %s: new from %s", server.name, request.call_id, inbound.source)
        return server

    def _forget_server(self, keys: tuple[ServerKey, ...], server: ServerTransaction) -> None:
        # A newer transaction may own the key by now (a request retransmitted after this one
        # terminated makes a new one): only remove our own entries.
        servers = self._servers
        for key in keys:
            if servers.get(key) is server:
                del servers[key]

    def _server_ended(self, server: ServerTransaction) -> None:
        self._running.pop(server, None)
        logger.debug("%s Call-ID %s: task ended", server.name, server.request.call_id)

    def _forget_client(self, key: ClientKey, client: ClientTransaction) -> None:
        if self._clients.get(key) is client:
            del self._clients[key]

    def _pass_stray(self, inbound: Inbound) -> None:
        self._counters.strays += 1
        try:
            self._on_stray(inbound)
        except Exception:
            # on_stray runs in the transport's receive loop, which must not die of it.
            logger.exception("on_stray raised for a message from %s", inbound.source)
            self._counters.handler_errors += 1
