"""The proxy core: ties the transport and transaction layers to the routes (RFC 3261 §16).

`Proxy.serve()` owns the proxy's tasks: the transport's receive loops, the transactions
nursery (one task per server transaction, in which its `ProxyTransaction` runs), and the
short tasks of stateless work (the ACK of a 2xx, a route for a message that failed to
parse).
"""

from __future__ import annotations

import hashlib
import logging
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import trio

from triosip import ids
from triosip.log import LogPrefix, LogThrottle, describe_failure, first_leaf, shown
from triosip.proxy._forward import (
    BRANCH_PREFIX,
    NextHop,
    RoutingError,
    forward_request,
    has_looped,
    is_ip_literal,
    is_ours,
    normalise_host,
    stamped_source,
    strip_own_routes,
    target_of,
)
from triosip.proxy._names import route_name
from triosip.proxy._port import OwnStamps, ProxyConfig
from triosip.proxy._statistics import ProxyCounters, ProxyStatistics
from triosip.proxy._transaction import STATUS_CLASSES, ProxyTransaction
from triosip.proxy.inspection import ProxyInspection
from triosip.sip import URI, ParseError, Request, Response, build_error_response, build_response
from triosip.transaction import ServerTransaction, TransactionError
from triosip.transport import Address, Inbound, TransportError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Container

    from triosip.transaction import TransactionLayer
    from triosip.transport import TransportLayer

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# Seconds a caller refused with a 503 (overload, shutdown) should wait before trying again.
RETRY_AFTER = "5"


class StatelessRequest:
    """A request that creates no transaction: the ACK of a 2xx (RFC 3261 §17.2.3, §16.11).

    Routes see it as they see a `ProxyTransaction`, but `relay()` sends it once, with no
    client transaction, and there is nothing to reply to.
    """

    def __init__(self, proxy: Proxy, inbound: Inbound, request: Request) -> None:
        self.proxy = proxy
        self.inbound = inbound
        self.request = request
        self.vars: dict[str, Any] = {}
        self.record_route_requested = False
        self.relayed = False

    def log_prefix(self) -> LogPrefix:
        return LogPrefix(self.request.call_id, self.request.top_via.branch or "")

    def loose_route(self) -> bool:
        """As `ProxyTransaction.loose_route`."""
        self.request, routed = strip_own_routes(self.request, self.proxy.own_addresses)
        return routed

    async def relay(self, destination: NextHop | None = None) -> bool:
        """Forward the request once, statelessly (RFC 3261 §16.11)."""
        request = self.request
        try:
            address = await self.proxy.resolve(target_of(request, destination))
            stamps = self.proxy.stamps.toward(address, None)
        except RoutingError as exc:
            reason = shown(exc.reason)
            logger.info("%s cannot relay %s: %s", self.log_prefix(), request.method, reason)
            return False
        # §16.11: a stateless proxy's branch is the same for each retransmission of the
        # request, yet differs between requests: a hash of the branch it came with.
        digest = hashlib.blake2b(
            f"{request.top_via.branch}\x00{request.call_id}".encode("utf-8", "surrogateescape"),
            digest_size=8,
        ).hexdigest()
        # A stream needs Content-Length (reliable); the edits in one copy.
        forwarded = forward_request(
            request,
            via=stamps.via_before_branch + BRANCH_PREFIX + digest,
            source=self.inbound.source,
            reliable=address.reliable,
        )
        try:
            await self.proxy.transport.send(bytes(forwarded), address)
        except TransportError as exc:
            logger.info("%s %s not sent: %s", self.log_prefix(), request.method, exc)
            return False
        self.proxy.counters.requests_forwarded[request.method] += 1
        self.relayed = True
        return True


@dataclass(frozen=True, slots=True)
class BadMessage:
    """Bytes that did not parse, for the error route."""

    error: ParseError
    data: bytes
    source: Address
    local: Address


class RouteHandlers(Protocol):
    """What the script layer gives the proxy: the entry points of a routes file."""

    async def request(self, tx: ProxyTransaction) -> None:
        """The request route, for every request with a transaction but a CANCEL."""

    async def stateless(self, request: StatelessRequest) -> None:
        """The request route, for a request with no transaction (the ACK of a 2xx)."""

    async def parse_error(self, proxy: Proxy, bad: BadMessage) -> bool:
        """The error route. Returns False when there is none (the proxy answers 400)."""


class ProxyInbox:
    """The proxy's entry points, handed to the layers it is built on.

    The transport and the transaction layer take their callbacks when they are built, and
    the proxy takes those layers when it is built: the application builds an inbox first,
    gives its methods to the layers, then the proxy, which the inbox delivers to from then
    on (`Proxy.__init__` attaches it).
    """

    __slots__ = ("_proxy",)

    _proxy: Proxy

    def message(self, inbound: Inbound) -> None:
        """The transport's ``on_message``: a message came in."""
        self._proxy._receive(inbound)

    def parse_error(self, error: ParseError, data: bytes, source: Address, local: Address) -> None:
        """The transport's ``on_parse_error``: bytes that are no SIP message came in."""
        self._proxy._on_parse_error(error, data, source, local)

    def request(self, server: ServerTransaction) -> Awaitable[None]:
        """The transaction layer's ``on_request``: run a new server transaction."""
        return self._proxy._on_request(server)

    def stray(self, inbound: Inbound) -> None:
        """The transaction layer's ``on_stray``: a message that matched no transaction."""
        self._proxy._on_stray(inbound)


class Proxy:
    """A transaction-stateful proxy (RFC 3261 §16) running a set of routes.

    It does not build its layers: `triosip.app.serve_triosip` builds them, with the
    callbacks of `inbox`, and hands them over.

    Args:
        inbox: the port whose methods `transport` and `transactions` call back; the proxy
            attaches itself to it.
        transport: the transport layer, built with ``inbox.message`` and
            ``inbox.parse_error``; `serve` runs it.
        transactions: the transaction layer over `transport`, built with
            ``inbox.request`` and ``inbox.stray``; `serve` runs it.
        handlers: the routes (see `RouteHandlers`); `handlers` may be swapped while
            running, which is how a reload takes effect for new transactions.
        config: fr timers and the like.
    """

    def __init__(
        self,
        *,
        inbox: ProxyInbox,
        transport: TransportLayer,
        transactions: TransactionLayer,
        handlers: RouteHandlers,
        config: ProxyConfig | None = None,
    ) -> None:
        self.handlers = handlers
        self.config = config or ProxyConfig()
        self.transport = transport
        self.transactions = transactions
        self.own_addresses: Container[tuple[str, int]] = frozenset()
        self.counters = ProxyCounters()
        self.stamps = OwnStamps(transport)
        # trio.current_time, until serve() has the run's clock: its current_time is the
        # same time in half the calls (read several times per request).
        self.now: Callable[[], float] = trio.current_time
        self._literal_hops: dict[tuple[str, str, int], Address] = {}
        self.closing = False
        self.live: dict[ServerTransaction, ProxyTransaction] = {}
        self._nursery: trio.Nursery | None = None
        # Made by all_answered() (shutdown): until then, no event to set per answer.
        self._answered: trio.Event | None = None
        # What a remote peer can make us log at will is throttled (per source host).
        self._bad_message_log = LogThrottle(logger, what="bad messages")
        self._failure_log = LogThrottle(logger, what="messages whose handling raised")
        self._dropped_log = LogThrottle(logger, what="requests dropped (loops, ACKs)")
        self._route_error_log = LogThrottle(logger, what="route exceptions")
        # The ACKs whose stateless route runs now, by Call-ID: a later request of the
        # dialog waits for its ACK to be relayed first (see _on_request).
        self._acks_in_flight: dict[str, _AckInFlight] = {}
        inbox._proxy = self

    async def serve(
        self, *, task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and proxy until cancelled.

        Owns the transport's tasks, the transactions nursery and the stateless tasks.
        Reports the bound listeners through `task_status` (ports chosen when 0 was asked).

        Raises:
            TransportError: a listener could not be opened (address in use, say).
        """
        self.now = trio.lowlevel.current_clock().current_time
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._bad_message_log.serve, name="log summaries: bad messages")
            nursery.start_soon(self._failure_log.serve, name="log summaries: handling failures")
            nursery.start_soon(self._dropped_log.serve, name="log summaries: dropped requests")
            nursery.start_soon(self._route_error_log.serve, name="log summaries: route exceptions")
            # The transaction layer first: the transport hands it requests as soon as the
            # sockets are bound, and what arrives before it serves would be dropped.
            await nursery.start(self.transactions.serve)
            listeners: list[Address] = await nursery.start(self.transport.serve)
            # Its listeners, their advertised names and its aliases (Kamailio's myself).
            self.own_addresses = self.transport.names.myself
            task_status.started(listeners)

    def statistics(self) -> ProxyStatistics:
        """A snapshot of the proxy's counters (those of its layers: `transport` and
        `transactions` have their own ``statistics()``)."""
        return self.counters.snapshot(transactions_active=len(self.live))

    def inspect(self) -> ProxyInspection:
        """A read-only view of what runs now, for the management interface: the live
        transactions, their branches and routes, and the tasks that run them."""
        return ProxyInspection(self.transactions, self.live)

    @property
    def unanswered(self) -> int:
        """How many live transactions have sent no final response yet."""
        return sum(1 for tx in self.live.values() if not tx.final_sent)

    def stop_accepting(self) -> None:
        """Shutdown, first step: new requests get a 503 from now on."""
        self.closing = True

    async def shut_down(self, grace: float) -> None:
        """Stop taking new transactions and wait up to `grace` seconds for the live ones
        to answer; answer those that did not 503, CANCELling their ringing branches. The
        caller then cancels `serve()`, and with it what remains."""
        self.stop_accepting()
        with trio.move_on_after(grace):
            await self.all_answered()
        unanswered = [tx for tx in self.live.values() if not tx.final_sent]
        if unanswered:
            # Callers get a final answer they can fail over on, rather than silence until
            # their own timers fire; callees stop ringing (OpenSIPS and Kamailio just die).
            logger.warning("answering %d unanswered transactions 503", len(unanswered))
            for tx in unanswered:
                await tx.give_up(503, "Shutting Down", (("Retry-After", RETRY_AFTER),))

    async def all_answered(self) -> None:
        """Wait until every live transaction has sent its final response."""
        while self.unanswered:
            self._answered = trio.Event()
            await self._answered.wait()

    def note_answered(self) -> None:
        """A transaction sent its final response or ended: wake `all_answered()`."""
        if self._answered is not None:
            self._answered.set()

    def is_myself(self, uri: URI) -> bool:
        """Whether `uri` names one of our listeners (Kamailio's ``myself``)."""
        return is_ours(uri, self.own_addresses)

    def has_looped(self, request: Request) -> bool:
        looped = has_looped(request, self.own_addresses)
        if looped and self._dropped_log.allow(request.top_via.host, "loop"):
            logger.info(
                "%s %s dropped: it came back with a Via of ours (a loop, RFC 3261 §16.3)",
                LogPrefix(request.call_id, request.top_via.branch or ""),
                request.method,
            )
        return looped

    async def resolve(self, hop: NextHop) -> Address:
        """The transport address of a next hop: an IP literal as it is, a name by DNS
        (A/AAAA through the resolver in a worker thread, so the proxy never blocks).

        Raises:
            RoutingError: the name does not resolve to an address we can send to.
        """
        # Kept: the same few next hops, again and again (bounded: hops come from the wire).
        # By a tuple: a NextHop's hash and equality are Python calls.
        key = (hop.transport, hop.host, hop.port)
        address = self._literal_hops.get(key)
        if address is not None:
            return address
        if is_ip_literal(hop.host):
            if len(self._literal_hops) >= OwnStamps.SIZE:
                self._literal_hops.clear()
            address = self._literal_hops[key] = Address(hop.transport, hop.host, hop.port)
            return address
        try:
            infos = await trio.socket.getaddrinfo(hop.host, hop.port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise RoutingError(f"DNS lookup of {hop.host} failed: {exc}", status=503) from None
        families = {":" in a.host for a in self.transport.listeners}
        for family, _type, _proto, _name, sockaddr in infos:
            if (family == socket.AF_INET6) in families:
                return Address(hop.transport, str(sockaddr[0]), hop.port)
        raise RoutingError(f"{hop.host} has no address we can reach", status=503)

    def route_failed(self, tx: Any, route: Callable[..., Awaitable[Any]], exc: Exception) -> None:
        """A route raised: the proxy is isolated from its bugs. Logs one line that names the
        route, its file and line (its traceback at DEBUG); the caller answers 500 if the
        transaction has no answer yet."""
        # A route may fail on what a peer sends, at will: a few lines per route and
        # exception type in each window, then a summary.
        name = route_name(route)
        if self._route_error_log.allow(f"route {name}", type(first_leaf(exc)).__name__):
            logger.error("%s %s", tx.log_prefix(), describe_failure(exc))
            logger.debug("%s %s: the traceback", tx.log_prefix(), name, exc_info=exc)

    def _receive(self, inbound: Inbound) -> None:
        message = inbound.message
        if isinstance(message, Request):
            self.counters.requests_received[message.method] += 1
        else:
            self.counters.replies_received[STATUS_CLASSES[message.status // 100]] += 1
        try:
            self.transactions.receive(inbound)
        except Exception:
            # The last resort (fields are checked when a message is accepted): this runs
            # in the transport's receive loop, which must not die of one message.
            self._message_failed(f"{_describe(message)} from {inbound.source}")

    def _start_guarded(self, work: Callable[[_T], Awaitable[None]], subject: _T, name: str) -> None:
        """Start the stateless work of one message in the proxy's nursery, where nothing
        it raises may escape: that would end the proxy. `name` names the task, and the
        message in the log line if it fails."""
        assert self._nursery is not None
        self._nursery.start_soon(self._guarded, work, subject, name, name=name)

    async def _guarded(self, work: Callable[[_T], Awaitable[None]], subject: _T, name: str) -> None:
        try:
            await work(subject)
        except Exception:
            self._message_failed(name)

    def _message_failed(self, what: str) -> None:
        """The last resort: log (with the traceback: it is a bug of ours) and count a
        message whose handling raised, then carry on."""
        self.counters.message_errors += 1
        if self._failure_log.allow("this proxy", "handling raised"):
            logger.exception("%s: handling failed, message dropped", shown(what))

    # -- from the transaction layer --------------------------------------------------

    async def _on_request(self, server: ServerTransaction) -> None:
        request = server.request
        acks = self._acks_in_flight
        ack = acks.get(request.call_id) if acks else None
        if ack is not None:
            # The ACK came first: it is relayed first. Each message runs in a task of its
            # own, and trio starts tasks in no promised order; a UA that sends its ACK
            # and then its BYE expects them in that order (sipp's uas aborts otherwise).
            if ack.relayed is None:
                ack.relayed = trio.Event()
            await ack.relayed.wait()
        if request.method == "CANCEL":
            await self._on_cancel(server)
            return
        if request.method == "INVITE":
            # The transaction layer sent it its 100 Trying already (RFC 3261 §17.2.1).
            self.counters.generated(100)
        tx = ProxyTransaction(self, server)
        if self.closing and request.to.tag is None:
            # Shutting down: no new dialog, but the requests of established ones (a BYE,
            # a re-INVITE) are still relayed while the grace lasts, so calls end cleanly.
            await tx.reply(503, "Shutting Down", headers=(("Retry-After", RETRY_AFTER),))
            return
        self.live[server] = tx
        self.counters.transactions_total += 1
        try:
            await tx.run()
        finally:
            del self.live[server]
            self.note_answered()

    async def _on_cancel(self, server: ServerTransaction) -> None:
        """RFC 3261 §16.10: a CANCEL is answered by this hop, then acted on."""
        invite = self.transactions.find_invite(server.request)
        tx = self.live.get(invite) if invite is not None else None
        if tx is None:
            await self._answer(server, 481, None, to_tag=_local_tag())
            return
        await self._answer(server, 200, None, to_tag=tx.to_tag)
        logger.info("%s CANCEL received", tx.log_prefix())
        tx.cancel()

    async def _answer(
        self, server: ServerTransaction, status: int, reason: str | None, *, to_tag: str
    ) -> None:
        """Answer a request the proxy handles itself (a bad Request-URI, a CANCEL)."""
        self.counters.generated(status)
        try:
            await server.respond(build_response(server.request, status, reason, to_tag=to_tag))
        except TransactionError as exc:
            # The peer is gone (a TCP connection closed, say): nothing more to do for it.
            logger.info(
                "%s %s: %d not sent: %s",
                server.name,
                shown(server.request.call_id, 64),
                status,
                exc,
            )

    def _on_stray(self, inbound: Inbound) -> None:
        message = inbound.message
        if isinstance(message, Request):
            if message.method == "ACK":
                call_id = message.call_id
                ack = self._acks_in_flight[call_id] = _AckInFlight()
                assert self._nursery is not None
                self._nursery.start_soon(self._run_stateless, inbound, ack, name=f"ACK {call_id}")
            return
        if message.status // 100 == 2:
            # RFC 6026 §8.4: a 2xx that matches no client transaction is forwarded
            # statelessly, so that the caller's retransmitted 2xx still get through.
            self._start_guarded(self._forward_stray_response, message, f"2xx {message.call_id}")

    async def _run_stateless(self, inbound: Inbound, ack: _AckInFlight) -> None:
        """The stateless work of an ACK, in its own task of the proxy's nursery (guarded as
        `_start_guarded` does, without its layers: a third of a call's requests)."""
        request = inbound.message
        assert isinstance(request, Request)
        try:
            stateless = StatelessRequest(self, inbound, request)
            if stateless.request.max_forwards == 0:
                why = "Max-Forwards 0"
            else:
                route = self.handlers.stateless
                with trio.CancelScope(deadline=self.now() + self.config.fr_timeout):
                    try:
                        await route(stateless)
                    except Exception as exc:
                        self.route_failed(stateless, route, exc)
                if stateless.relayed:
                    return
                why = "the route relayed it nowhere"
            if self._dropped_log.allow(inbound.source.host, why):
                logger.info("%s ACK dropped: %s", stateless.log_prefix(), why)
        except Exception:
            self._message_failed(f"ACK {request.call_id}")
        finally:
            if ack.relayed is not None:
                ack.relayed.set()
            call_id = request.call_id
            if self._acks_in_flight.get(call_id) is ack:
                del self._acks_in_flight[call_id]

    async def _forward_stray_response(self, response: Response) -> None:
        vias = response.via
        if len(vias) < 2 or (normalise_host(vias[0].host), vias[0].port or 5060) not in (
            self.own_addresses
        ):
            return
        upstream = response.without_first_value("via")
        # The Via below ours names the upstream as we stamped it (received, rport).
        destination = stamped_source(vias[1])
        if destination is None:
            return
        try:
            await self.transport.send(bytes(upstream), destination)
        except TransportError as exc:
            logger.info("%s stray 2xx not forwarded: %s", response.call_id, exc)

    def _on_parse_error(
        self, error: ParseError, data: bytes, source: Address, local: Address
    ) -> None:
        self.counters.parse_error(error.reason)
        bad = BadMessage(error, data, source, local)
        self._start_guarded(self._handle_bad_message, bad, f"bad message from {source}")

    async def _handle_bad_message(self, bad: BadMessage) -> None:
        reason = bad.error.reason
        if self._bad_message_log.allow(bad.source.host, shown(reason, 40)):
            logger.info(
                "bad message from %s: %d %s: %s",
                bad.source,
                bad.error.status,
                shown(reason),
                shown(bad.data, 80),
            )
        with trio.move_on_after(self.config.fr_timeout):
            try:
                if await self.handlers.parse_error(self, bad):
                    return
            except Exception:
                logger.exception("error route raised")
            answer = build_error_response(bad.error, to_tag=_local_tag())
            if answer is not None:
                self.counters.generated(bad.error.status)
                try:
                    await self.transport.send(answer, bad.source)
                except TransportError as exc:
                    logger.info("400 to %s not sent: %s", bad.source, exc)


class _AckInFlight:
    """An ACK whose stateless route runs now; `relayed` is made only if a later request
    of its dialog has to wait for it (rarely: no event per ACK)."""

    __slots__ = ("relayed",)

    def __init__(self) -> None:
        self.relayed: trio.Event | None = None


def _local_tag() -> str:
    return ids.token_hex(6)


def _describe(message: Request | Response) -> str:
    """A message in a log line, from what the parser checked (reading nothing lazy)."""
    kind = message.method if isinstance(message, Request) else str(message.status)
    return f"{kind} {message.call_id}"
