"""SIP over TCP: listeners, connections in both directions, framing (RFC 3261 §18.3).

A connection is a `TcpConnection` with its own reading task, named ``tcp <peer>``, which
frames messages with a `triosip.sip.StreamParser` and hands them up in order. Its idle
timeout is the deadline of the task's cancel scope, moved on each message; no timer task
exists. Accepted and outbound connections are the same kind of object, registered by the
peer's address, so that a response goes back on the connection its request came in on and
a request to a peer reuses any live connection with it (RFC 5923's spirit). Concurrent
sends to a destination with no connection yet share one connection attempt.

When a parse error is fatal for a stream (framing lost), the connection stops reading,
waits up to ``ERROR_LINGER`` seconds for the answer the layer above sends on it, then
closes.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from triosip.sip import ParseError, StreamParser, check_message

from ._address import Address
from ._connection import TcpConnection
from ._errors import TransportError
from ._sockets import PONG, connect_tcp, describe_os_error
from .base import Inbound

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._limits import TransportLimits
    from ._statistics import Counters

logger = logging.getLogger(__name__)

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


@dataclass(slots=True)
class _ConnectAttempt:
    """A TCP connection being opened, which other senders to the same address wait for."""

    done: trio.Event
    error: TransportError | None = None


class TcpTransport:
    """The TCP listeners and connections of a `TransportLayer`.

    Made by the layer, which binds the listeners, runs `serve_listener` for each in its
    nursery and hands that nursery over (`nursery`) for the connections' tasks.
    """

    def __init__(
        self,
        *,
        on_message: Callable[[Inbound], None],
        on_parse_error: Callable[[ParseError, bytes, Address, Address], None],
        limits: TransportLimits,
        counters: Counters,
    ) -> None:
        self._on_message = on_message
        self._on_parse_error = on_parse_error
        self._limits = limits
        self._reply_to_via = limits.reply_to_via
        self._counters = counters
        self.nursery: trio.Nursery | None = None
        """Where connection tasks run: the layer's nursery, while it serves."""
        self._connections: set[TcpConnection] = set()
        self._by_peer: dict[Address, TcpConnection] = {}
        self._connecting: dict[Address, _ConnectAttempt] = {}

    # --- sending -----------------------------------------------------------------------

    async def connection_to(self, destination: Address) -> TcpConnection:
        """A live connection with `destination`, reused or opened.

        Raises:
            TransportError: the connection was refused, timed out, or every connection
                is busy.
        """
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

    # --- receiving ---------------------------------------------------------------------

    async def serve_listener(self, listener: trio.SocketListener, local: Address) -> None:
        """Accept connections on ``listener`` until cancelled: the task ``accept tcp:<local>``."""
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
        nursery = self.nursery
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
