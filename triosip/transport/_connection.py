"""One TCP connection: its stream, its peer, its idle deadline and its send lock.

The connection's reading task (``TcpTransport._serve_connection``, named ``tcp <peer>``)
runs inside `TcpConnection.scope`. That scope's deadline is the idle timeout, moved forward
on every message received or sent (``touch``): when nothing has happened for
``tcp_idle_timeout`` the scope is cancelled, the task ends and the stream is closed; no
timer task exists. `TcpConnection.close` cancels the same scope.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ._errors import TransportError

if TYPE_CHECKING:
    from ._address import Address
    from ._statistics import Counters

logger = logging.getLogger(__name__)


class TcpConnection:
    """A TCP connection, accepted or opened by the transport layer (RFC 3261 §18.3).

    The same object serves both directions (RFC 5923's spirit): responses go back on the
    connection a request came in on, and requests to the peer's address reuse it. Outbound
    connections are read like accepted ones, so responses arriving on them are handed up.

    Attributes:
        peer: the remote address (for an accepted connection: its source IP and port).
        local: the local address of the connection (for an accepted one, the listener's).
        outbound: True if this side connected.
        scope: the cancel scope of the reading task; its deadline is the idle deadline.
        last_activity: ``trio.current_time()`` of the last message received or sent.
    """

    __slots__ = (
        "_answered",
        "_closed",
        "_counters",
        "_idle_timeout",
        "_send_lock",
        "last_activity",
        "local",
        "outbound",
        "peer",
        "scope",
        "stream",
    )

    def __init__(
        self,
        stream: trio.SocketStream,
        *,
        peer: Address,
        local: Address,
        outbound: bool,
        idle_timeout: float,
        counters: Counters,
    ) -> None:
        self.stream = stream
        self.peer = peer
        self.local = local
        self.outbound = outbound
        self._idle_timeout = idle_timeout
        self._counters = counters
        now = trio.current_time()
        self.last_activity = now
        self.scope = trio.CancelScope(deadline=now + idle_timeout)
        # trio streams forbid concurrent send_all; transactions send concurrently.
        self._send_lock = trio.StrictFIFOLock()
        self._closed = False
        self._answered: trio.Event | None = None

    def __repr__(self) -> str:
        direction = "to" if self.outbound else "from"
        state = "" if self.alive else ", closed"
        return f"<TcpConnection {direction} {self.peer} on {self.local}{state}>"

    @property
    def alive(self) -> bool:
        """Whether the connection can still carry messages."""
        return not self._closed

    def close(self) -> None:
        """Close the connection: its reading task ends and closes the stream. Idempotent."""
        self._closed = True
        self.scope.cancel()

    def touch(self) -> None:
        """Note traffic: move the idle deadline forward (Kamailio's tcp_connection_lifetime)."""
        now = trio.current_time()
        self.last_activity = now
        if not self._closed:
            self.scope.deadline = now + self._idle_timeout

    async def send(self, data: bytes) -> None:
        """Write one message (or keep-alive) on the connection, whole.

        Concurrent senders are served in order, one message at a time, so messages never
        interleave on the stream.

        Args:
            data: the bytes to write.

        Raises:
            TransportError: the connection is closed or broke while writing; it is closed.
        """
        if self._closed:
            raise TransportError(f"cannot send to {self.peer}: connection closed")
        try:
            async with self._send_lock:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.close()
            self._counters.send_errors += 1
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            raise TransportError(f"cannot send to {self.peer}: connection lost ({cause})") from exc
        counters = self._counters
        counters.tcp_messages_sent += 1
        counters.tcp_bytes_sent += len(data)
        self.touch()
        if self._answered is not None:
            self._answered.set()

    async def linger(self, seconds: float) -> None:
        """After a fatal parse error: wait until one message is sent back on this connection
        (the answer to the bad message, sent by the layer above) or `seconds` pass."""
        self._answered = trio.Event()
        with trio.move_on_after(seconds):
            await self._answered.wait()
