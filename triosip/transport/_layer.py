"""The transport layer: UDP and TCP listeners, connections and sends (RFC 3261 §18).

Theory of operation
-------------------

`TransportLayer.serve` binds every listener, then runs one task per UDP socket, one per
TCP listener and one per TCP connection, all in its own nursery; it never returns.

* **UDP.** Each socket is a non-blocking stdlib socket. Its task drains it with plain
  ``recvfrom`` calls until ``BlockingIOError`` and only then waits for it to become
  readable (DESIGN.md measured this ~1.5x faster than awaiting each datagram, with no
  drops in a burst). After ``UDP_BATCH`` datagrams in a row it passes through the
  scheduler once, so a flood does not starve the other tasks. Each datagram is parsed and
  handed to ``on_message`` synchronously: the loop never waits for a consumer (STYLE rule
  9). Sends use the listener's own socket, so the source port is the listener's port,
  which peers and NATs rely on (RFC 3581).
* **TCP.** A connection is a `TcpConnection` with its own reading task, named
  ``tcp <peer>``, which frames messages with a `triosip.sip.StreamParser` (RFC 3261
  §18.3) and hands them up in order. Its idle timeout is the deadline of the task's cancel
  scope, moved on each message; no timer task exists. Accepted and outbound connections
  are the same kind of object, registered by the peer's address, so that a response goes
  back on the connection its request came in on and a request to a peer reuses any live
  connection with it (RFC 5923's spirit). Concurrent sends to a destination with no
  connection yet share one connection attempt.
* **Errors.** A message is accepted once it parses and passes
  `triosip.sip.check_message`. A `triosip.sip.ParseError` from either goes to
  ``on_parse_error``, whose caller answers
  (400, 413, 505...) by calling `TransportLayer.send` back to the source. When the error
  is fatal for a stream (framing lost), the connection stops reading, waits up to
  ``ERROR_LINGER`` seconds for that answer to be sent on it, then closes. Any other
  exception from the callbacks is a bug and propagates: it is the callback's author who
  decides what to isolate.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from triosip.sip import ParseError, StreamParser, check_message, parse_message

from ._address import TRANSPORTS, Address
from ._errors import TransportError
from ._sockets import bind_tcp, bind_udp, connect_tcp, describe_os_error
from ._statistics import Counters, TransportStatistics
from ._tcp import TcpConnection

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Sequence

    from triosip.sip import Request, Response

logger = logging.getLogger(__name__)

UDP_BATCH = 64
"""Datagrams read in a row before passing through the scheduler once."""

UDP_RECEIVE_SIZE = 65535
"""The ``recvfrom`` buffer: larger than any UDP payload, so nothing is truncated."""

TCP_RECEIVE_SIZE = 65536
"""The most bytes read from a TCP stream at a time."""

ERROR_LINGER = 2.0
"""Seconds a connection waits, after a fatal parse error, for the answer to be sent on it."""

EVICT_AFTER_IDLE = 1.0
"""At ``tcp_max_connections``, the least recently used connection is closed to make room
for a new one if it has been idle this long; otherwise the new connection is refused."""

ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
"""``accept`` errors that mean "out of resources, try later" (as trio.serve_listeners)."""

ACCEPT_RETRY_DELAY = 0.1
"""Seconds to wait before accepting again after one of those."""

PING = b"\r\n\r\n"
PONG = b"\r\n"
_CR_LF = frozenset(b"\r\n")


@dataclass(frozen=True, slots=True)
class Inbound:
    """One parsed message, handed up by the transport.

    Attributes:
        message: the request or response.
        source: the peer it came from (transport, IP, port).
        local: the local address it arrived on: the UDP listener, or the TCP connection's
            local address (the listener's, for an accepted connection).
        connection: for TCP, the connection it came on: responses to it, and requests
            back to the peer, reuse it.
        reply_to_via: whether responses to it go where its top Via says rather than to
            its source: ``TransportLimits.reply_to_via``, for `response_destination`.
    """

    message: Request | Response
    source: Address
    local: Address
    connection: TcpConnection | None
    reply_to_via: bool = False


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Sizes, bounds, timeouts and the response policy of the transport layer.

    Attributes:
        udp_buffer_bytes: SO_RCVBUF and SO_SNDBUF asked of the kernel for each UDP socket;
            a burst larger than the receive buffer is dropped by the kernel.
        max_message_size: the largest message accepted (413 beyond, and over TCP the
            connection is closed after the answer).
        tcp_max_connections: TCP connections open at once, both directions.
        tcp_idle_timeout: seconds a TCP connection may carry no message before it is
            closed (Kamailio's tcp_connection_lifetime).
        tcp_connect_timeout: seconds an outbound TCP connection may take to open.
        udp_mtu_threshold: RFC 3261 §18.1.1: a request larger than this must go over a
            congestion-controlled transport. The layer above applies it: switching
            transport means rewriting the Via.
        reply_to_via: send responses where the request's top Via says (its maddr,
            received and rport values) rather than back to its source (Kamailio's
            ``reply_to_via``; ``triosip run --reply-to-via``). Off by default: anyone can
            write a Via, so this makes the proxy a reflector on the open internet.
            Messages carry it up in `Inbound.reply_to_via`.
    """

    udp_buffer_bytes: int = 4 * 1024 * 1024
    max_message_size: int = 65535
    tcp_max_connections: int = 2048
    tcp_idle_timeout: float = 120.0
    tcp_connect_timeout: float = 10.0
    udp_mtu_threshold: int = 1300
    reply_to_via: bool = False

    def __post_init__(self) -> None:
        for name in (
            "udp_buffer_bytes",
            "max_message_size",
            "tcp_max_connections",
            "tcp_idle_timeout",
            "tcp_connect_timeout",
            "udp_mtu_threshold",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)!r}")


DEFAULT_LIMITS = TransportLimits()


@dataclass(slots=True)
class _ConnectAttempt:
    """A TCP connection being opened, which other senders to the same address wait for."""

    done: trio.Event
    error: TransportError | None = None


class TransportLayer:
    """UDP and TCP listeners, TCP connections, and sending, for IPv4 and IPv6.

    Args:
        listen: the addresses to listen on (port 0 picks a free port).
        on_message: called with each message received, synchronously, in the receiving
            task: it must not block (start a task, or ``send_nowait`` into a channel).
        on_parse_error: called with the error, the bytes (the datagram; for TCP the
            bytes last read from the stream, as the parser keeps no copy of the bad
            message), the source and the local address, synchronously as well.
        limits: sizes, bounds and timeouts.

    Raises:
        ValueError: a listen address has a transport other than udp or tcp.
    """

    def __init__(
        self,
        listen: Sequence[Address],
        *,
        on_message: Callable[[Inbound], None],
        on_parse_error: Callable[[ParseError, bytes, Address, Address], None],
        limits: TransportLimits = DEFAULT_LIMITS,
    ) -> None:
        for address in listen:
            if address.transport not in TRANSPORTS:
                raise ValueError(f"cannot listen on {address}: use udp or tcp")
        self._listen = tuple(listen)
        self._on_message = on_message
        self._on_parse_error = on_parse_error
        self._limits = limits
        self._reply_to_via = limits.reply_to_via
        self._counters = Counters()
        self._nursery: trio.Nursery | None = None
        self.listeners: tuple[Address, ...] = ()
        """The bound addresses (the real ports when 0 was asked), once `serve` started."""
        self._udp_by_local: dict[Address, socket.socket] = {}
        self._udp_by_family: dict[bool, socket.socket] = {}  # is_ipv6 -> first listener
        self._udp_write_locks: dict[socket.socket, trio.Lock] = {}
        self._connections: set[TcpConnection] = set()
        self._by_peer: dict[Address, TcpConnection] = {}
        self._connecting: dict[Address, _ConnectAttempt] = {}

    @property
    def limits(self) -> TransportLimits:
        """The sizes, bounds and timeouts this layer was built with."""
        return self._limits

    # --- serving ---------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind every listener, then receive and keep TCP connections until cancelled.

        Owns one task per UDP socket (``receive udp:<address>``), per TCP listener
        (``accept tcp:<address>``) and per TCP connection (``tcp <peer>``), in its own
        nursery; outbound connections opened by `send` run there too. Never returns;
        cancel it to stop, which closes every socket.

        Args:
            task_status: given the list of bound addresses, in the order of ``listen``
                (with the real ports when 0 was asked), once every listener is bound.

        Raises:
            TransportError: a listener could not be opened, e.g. ``cannot listen on
                udp:127.0.0.1:5060: address already in use``.
            RuntimeError: the layer is serving already.
        """
        if self._nursery is not None:
            raise RuntimeError("this TransportLayer is serving already")
        udp: list[tuple[socket.socket, Address]] = []
        tcp: list[tuple[trio.SocketListener, Address]] = []
        bound: list[Address] = []
        try:
            for address in self._listen:
                if address.transport == "udp":
                    sock, local = bind_udp(address, buffer_bytes=self._limits.udp_buffer_bytes)
                    udp.append((sock, local))
                else:
                    listener, local = bind_tcp(address)
                    tcp.append((listener, local))
                bound.append(local)
            async with trio.open_nursery() as nursery:
                for sock, local in udp:
                    self._udp_by_local[local] = sock
                    self._udp_by_family.setdefault(local.is_ipv6, sock)
                    self._udp_write_locks[sock] = trio.Lock()
                    nursery.start_soon(self._serve_udp, sock, local, name=f"receive {local}")
                for listener, local in tcp:
                    nursery.start_soon(
                        self._serve_tcp_listener, listener, local, name=f"accept {local}"
                    )
                self._nursery = nursery
                self.listeners = tuple(bound)
                logger.info("listening on %s", ", ".join(str(a) for a in bound))
                task_status.started(bound)
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self.listeners = ()
            self._udp_by_local.clear()
            self._udp_by_family.clear()
            self._udp_write_locks.clear()
            for sock, _ in udp:
                sock.close()
            for listener, _ in tcp:
                listener.socket.close()

    def local_address(self, transport: str, family_of: str | None = None) -> Address:
        """The listener to name in a Via or a Record-Route for messages sent on `transport`.

        Args:
            transport: ``"udp"`` or ``"tcp"``.
            family_of: an IP literal (or any host with a ``:`` for IPv6) whose address
                family the listener should have: the destination's host, typically. With
                none, or none of that family, the first listener of the transport.

        Returns:
            A bound listener address.

        Raises:
            TransportError: no listener of that transport.
        """
        want_ipv6 = None if family_of is None else ":" in family_of
        fallback: Address | None = None
        for address in self.listeners:
            if address.transport != transport:
                continue
            if want_ipv6 is None or address.is_ipv6 == want_ipv6:
                return address
            if fallback is None:
                fallback = address
        if fallback is None:
            raise TransportError(f"no {transport} listener")
        return fallback

    def statistics(self) -> TransportStatistics:
        """A snapshot of the counters."""
        return self._counters.snapshot()

    # --- sending -----------------------------------------------------------------------

    def send_nowait(
        self, data: bytes, destination: Address, *, local: Address | None = None
    ) -> bool:
        """Send a UDP datagram now, if the socket's send buffer takes it.

        Args:
            data: the datagram.
            destination: where to send it.
            local: the UDP listener to send from (default: the first of the destination's
                address family).

        Returns:
            True if the kernel took it. False if the buffer is full (counted in
            ``udp_send_would_block``), if the destination is not UDP, or if the send
            failed: in every case the caller may ``await send(...)``, which waits, or
            raises a `TransportError` saying why.
        """
        if destination.transport != "udp":
            return False
        sock = self._udp_socket(destination, local)
        if sock is None:
            return False
        try:
            sock.sendto(data, (destination.host, destination.port))
        except BlockingIOError:
            self._counters.udp_send_would_block += 1
            return False
        except OSError:
            return False
        counters = self._counters
        counters.udp_datagrams_sent += 1
        counters.udp_bytes_sent += len(data)
        logger.debug("udp -> %s: %d bytes", destination, len(data))
        return True

    async def send(
        self,
        data: bytes,
        destination: Address,
        *,
        connection: TcpConnection | None = None,
        local: Address | None = None,
    ) -> None:
        """Send one message.

        * Over `connection` if it is given and alive, whatever `destination` says
          (RFC 3261 §18.2.2: a response goes back on the connection its request came on).
        * UDP: from the listener socket of the destination's family (or `local`), waiting
          while the socket's send buffer is full. A cancelled caller sends nothing, but a
          datagram the kernel takes at once does not pass through the scheduler.
        * TCP: over a live connection with `destination` if there is one (accepted or
          outbound), else over a new one, opened within ``tcp_connect_timeout`` and then
          read like any other (responses come back on it).

        Args:
            data: the serialized message.
            destination: where to send it.
            connection: the TCP connection to prefer.
            local: the UDP listener to send from.

        Raises:
            TransportError: it cannot be delivered: no listener of that family, an
                unsupported transport, a refused or timed-out connection, a broken one.
        """
        if connection is not None and connection.alive:
            await connection.send(data)
            logger.debug("%s -> %s: %d bytes", connection.local, connection.peer, len(data))
            return
        if self._nursery is None:
            raise TransportError(f"cannot send to {destination}: the transport is not serving")
        if destination.transport == "udp":
            await self._send_udp(data, destination, local)
        elif destination.transport == "tcp":
            tcp = await self._connection_to(destination)
            await tcp.send(data)
            logger.debug("%s -> %s: %d bytes", tcp.local, tcp.peer, len(data))
        else:
            self._counters.send_errors += 1
            raise TransportError(
                f"cannot send to {destination}: transport {destination.transport} is not supported"
            )

    def _udp_socket(self, destination: Address, local: Address | None) -> socket.socket | None:
        if local is not None:
            sock = self._udp_by_local.get(local)
            if sock is not None:
                return sock
        return self._udp_by_family.get(":" in destination.host)

    async def _send_udp(self, data: bytes, destination: Address, local: Address | None) -> None:
        sock = self._udp_socket(destination, local)
        if sock is None:
            self._counters.send_errors += 1
            family = "IPv6" if destination.is_ipv6 else "IPv4"
            raise TransportError(f"cannot send to {destination}: no {family} UDP listener")
        # A cancelled caller sends nothing. But a datagram the kernel takes at once costs
        # no trip through the scheduler (~9 µs, DESIGN.md "What things cost"): like
        # send_nowait, a UDP send never blocks, so only a full buffer makes this wait.
        await trio.lowlevel.checkpoint_if_cancelled()
        address = (destination.host, destination.port)
        while True:
            try:
                sock.sendto(data, address)
            except BlockingIOError:
                # trio lets one task at a time wait for a socket to be writable.
                async with self._udp_write_locks[sock]:
                    await trio.lowlevel.wait_writable(sock)
                continue
            except OSError as exc:
                self._counters.send_errors += 1
                raise TransportError(
                    f"cannot send to {destination}: {describe_os_error(exc)}"
                ) from exc
            break
        counters = self._counters
        counters.udp_datagrams_sent += 1
        counters.udp_bytes_sent += len(data)
        logger.debug("udp -> %s: %d bytes", destination, len(data))

    async def _connection_to(self, destination: Address) -> TcpConnection:
        """A live connection with `destination`, reused or opened."""
        while True:
            connection = self._by_peer.get(destination)
            if connection is not None and connection.alive:
                return connection
            attempt = self._connecting.get(destination)
            if attempt is None:
                break
            await attempt.done.wait()
            error = attempt.error
            if error is not None:
                raise TransportError(str(error), refused=error.refused) from error
            # Connected (found above) or the opener was cancelled (we try ourselves).
        attempt = _ConnectAttempt(trio.Event())
        self._connecting[destination] = attempt
        try:
            return await self._connect(destination)
        except TransportError as exc:
            attempt.error = exc
            raise
        finally:
            del self._connecting[destination]
            attempt.done.set()

    async def _connect(self, destination: Address) -> TcpConnection:
        counters = self._counters
        timeout = self._limits.tcp_connect_timeout
        stream: trio.SocketStream | None = None
        try:
            with trio.move_on_after(timeout):
                stream = await connect_tcp(destination)
        except TransportError:
            counters.tcp_connect_failures += 1
            counters.send_errors += 1
            raise
        if stream is None:
            counters.tcp_connect_failures += 1
            counters.send_errors += 1
            raise TransportError(f"cannot connect to {destination}: timed out after {timeout:g} s")
        sockname = stream.socket.getsockname()
        local = Address("tcp", sockname[0], sockname[1])
        connection = self._adopt(stream, peer=destination, local=local, outbound=True)
        if connection is None:
            counters.send_errors += 1
            raise TransportError(
                f"cannot connect to {destination}: all {self._limits.tcp_max_connections} "
                "TCP connections are busy"
            )
        counters.tcp_connections_connected += 1
        logger.debug("tcp %s: connected from %s", destination, local)
        return connection

    # --- UDP ---------------------------------------------------------------------------

    async def _serve_udp(self, sock: socket.socket, local: Address) -> None:
        recvfrom = sock.recvfrom
        receive = self._receive_datagram
        while True:
            for _ in range(UDP_BATCH):
                try:
                    data, peer = recvfrom(UDP_RECEIVE_SIZE)
                except BlockingIOError:
                    break
                except (ConnectionRefusedError, ConnectionResetError):
                    # An ICMP error for an earlier send, reported by some kernels: it is
                    # not this loop's business (and the send that caused it has returned).
                    continue
                receive(sock, data, Address("udp", peer[0], peer[1]), local)
            else:
                # A full batch: let the other tasks run, then drain on.
                await trio.lowlevel.checkpoint()
                continue
            await trio.lowlevel.wait_readable(sock)

    def _receive_datagram(
        self, sock: socket.socket, data: bytes, source: Address, local: Address
    ) -> None:
        counters = self._counters
        counters.udp_datagrams_received += 1
        counters.udp_bytes_received += len(data)
        if not data or (data[0] in _CR_LF and not data.strip(b"\r\n")):
            # RFC 5626 §4.4.1: CRLF keep-alives carry no message. A double-CRLF "ping"
            # gets a single-CRLF "pong"; some UAs send them over UDP as well.
            counters.keepalives_received += 1
            if data == PING:
                # Best effort: a full buffer drops the pong, as it would any datagram.
                with contextlib.suppress(OSError):
                    sock.sendto(PONG, (source.host, source.port))
            return
        try:
            message = parse_message(data, max_size=self._limits.max_message_size)
            check_message(message)  # nothing the proxy reads later may raise
        except ParseError as exc:
            counters.parse_errors += 1
            logger.debug("%s <- %s: bad message: %s", local, source, exc)
            self._on_parse_error(exc, data, source, local)
            return
        logger.debug("%s <- %s: %d bytes", local, source, len(data))
        self._on_message(Inbound(message, source, local, None, self._reply_to_via))

    # --- TCP ---------------------------------------------------------------------------

    async def _serve_tcp_listener(self, listener: trio.SocketListener, local: Address) -> None:
        counters = self._counters
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                logger.error(
                    "%s: cannot accept: %s; retrying in %g s",
                    local,
                    describe_os_error(exc),
                    ACCEPT_RETRY_DELAY,
                )
                await trio.sleep(ACCEPT_RETRY_DELAY)
                continue
            try:
                peer_name = stream.socket.getpeername()
                own_name = stream.socket.getsockname()
            except OSError:
                stream.socket.close()  # the peer has gone already
                continue
            peer = Address("tcp", peer_name[0], peer_name[1])
            own = Address("tcp", own_name[0], own_name[1])
            if self._adopt(stream, peer=peer, local=own, outbound=False) is not None:
                counters.tcp_connections_accepted += 1
                logger.debug("tcp %s: accepted on %s", peer, own)

    def _adopt(
        self, stream: trio.SocketStream, *, peer: Address, local: Address, outbound: bool
    ) -> TcpConnection | None:
        """Register a new connection and start its reading task; None if refused."""
        nursery = self._nursery
        if nursery is None or (
            len(self._connections) >= self._limits.tcp_max_connections and not self._evict_one()
        ):
            if nursery is not None:
                self._counters.tcp_connections_refused += 1
                logger.warning(
                    "tcp %s: refused: all %d TCP connections are busy",
                    peer,
                    self._limits.tcp_max_connections,
                )
            stream.socket.close()
            return None
        connection = TcpConnection(
            stream,
            peer=peer,
            local=local,
            outbound=outbound,
            idle_timeout=self._limits.tcp_idle_timeout,
            counters=self._counters,
        )
        self._connections.add(connection)
        self._by_peer[peer] = connection
        self._counters.tcp_connections_open += 1
        nursery.start_soon(self._serve_connection, connection, name=f"tcp {peer.host_port}")
        return connection

    def _evict_one(self) -> bool:
        """Close the least recently used connection if it is idle enough (see
        ``EVICT_AFTER_IDLE``); False if every connection is busy."""
        oldest = min(self._connections, key=_last_activity)
        idle = trio.current_time() - oldest.last_activity
        if idle < EVICT_AFTER_IDLE:
            return False
        logger.info("tcp %s: closed after %.1f s idle, to make room", oldest.peer, idle)
        oldest.close()
        self._forget(oldest)
        self._counters.tcp_connections_evicted += 1
        return True

    def _forget(self, connection: TcpConnection) -> None:
        if connection not in self._connections:
            return
        self._connections.discard(connection)
        if self._by_peer.get(connection.peer) is connection:
            del self._by_peer[connection.peer]
        counters = self._counters
        counters.tcp_connections_open -= 1
        counters.tcp_connections_closed += 1

    async def _serve_connection(self, connection: TcpConnection) -> None:
        parser = StreamParser(max_size=self._limits.max_message_size)
        counters = self._counters
        stream = connection.stream
        reason = "transport stopped"
        try:
            with connection.scope:
                while True:
                    try:
                        data = await stream.receive_some(TCP_RECEIVE_SIZE)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        reason = f"broken ({exc.__cause__ or exc})"
                        break
                    if not data:
                        reason = "closed by the peer"
                        break
                    counters.tcp_bytes_received += len(data)
                    parser.feed(data)
                    if not self._deliver(connection, parser, data):
                        # RFC 3261 §18.3: framing is lost; the layer above is answering.
                        reason = "fatal parse error"
                        await connection.linger(ERROR_LINGER)
                        break
                    pings = parser.take_pings()
                    if pings:
                        # RFC 5626 §4.4.1: answer each double-CRLF ping with a CRLF pong.
                        counters.keepalives_received += pings
                        connection.touch()
                        try:
                            await connection.send(PONG * pings)
                        except TransportError:
                            reason = "broken (pong not sent)"
                            break
            if connection.scope.cancelled_caught:
                if connection.alive:
                    reason = f"idle for {self._limits.tcp_idle_timeout:g} s"
                    counters.tcp_connections_idle_closed += 1
                else:
                    reason = "closed"
        finally:
            connection.close()
            self._forget(connection)
            await trio.aclose_forcefully(stream)
            logger.debug("tcp %s: %s", connection.peer, reason)

    def _deliver(self, connection: TcpConnection, parser: StreamParser, data: bytes) -> bool:
        """Hand up every complete message in the parser; False after a fatal error."""
        counters = self._counters
        on_message = self._on_message
        reply_to_via = self._reply_to_via
        peer = connection.peer
        local = connection.local
        while True:
            try:
                message = parser.next_message()
                if message is not None:
                    check_message(message)  # nothing the proxy reads later may raise
            except ParseError as exc:
                counters.parse_errors += 1
                logger.debug("%s <- %s: bad message: %s", local, peer, exc)
                self._on_parse_error(exc, data, peer, local)
                if exc.fatal:
                    return False
                continue
            if message is None:
                return True
            counters.tcp_messages_received += 1
            connection.touch()
            logger.debug("%s <- %s: message", local, peer)
            on_message(Inbound(message, peer, local, connection, reply_to_via))


def _last_activity(connection: TcpConnection) -> float:
    return connection.last_activity
