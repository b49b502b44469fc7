"""A small HTTP/1.1 client on trio streams: h11 for the protocol, a keep-alive pool per origin.

Theory of operation: `HttpPool.request` borrows an idle connection to the URL's origin
(scheme, host, port) or opens one (TCP, then TLS through `trio.SSLStream` for https), writes
the whole request in one send, and feeds what it receives to the connection's `h11.Connection`
until the response's end. A connection whose exchange ended cleanly, and that both sides agree
to keep alive (RFC 9112 §9.3), goes back to its origin's idle list; any other outcome — an
error, a timeout, a cancel — closes its socket at once, synchronously (no await, so no cancel
can skip it): the peer sees the close, and the pool never holds a connection whose HTTP state
is half-way through an exchange.

The pool counts every open connection, idle or busy, against ``max_connections``: a request
that finds none idle for its origin and the pool full closes the oldest idle connection of
another origin, or else waits for a busy one to finish.

Failures are `HttpError` (with httpx's names for the kinds, which the scripts' logs and tests
already know: ``ConnectError``, ``ReadError``, ``RemoteProtocolError``, ``InvalidURL``,
``UnsupportedProtocol``) or `HttpTimeout` (one phase passed the client's own limit).
"""

from __future__ import annotations

import logging
import select
import ssl
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

import h11
import trio

if TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger(__name__)

# The largest response body read (bytes); past it the request fails and the connection closes,
# so a runaway service can't fill the proxy's memory.
MAX_BODY = 16 * 1024 * 1024
_RECEIVE_SIZE = 65536
_DEFAULT_PORTS = {"http": 80, "https": 443}
_USER_AGENT = b"triosip"


class HttpError(Exception):
    """A request got no response: ``kind`` names what went wrong (``"ConnectError"``, …)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


class HttpTimeout(Exception):
    """A phase of a request (connect, write, one read) passed the client's own limit."""


@dataclass(frozen=True, slots=True)
class HttpResult:
    """A whole response: status, header fields (lower-case names, latin-1), body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    target: bytes  # path and query, as sent in the request line
    host_header: bytes


def _parse_url(url: str, params: Mapping[str, str] | None) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise HttpError("InvalidURL", str(exc)) from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise HttpError("UnsupportedProtocol", f"not an http:// or https:// URL: {url!r}")
    host = parts.hostname
    if not host:
        raise HttpError("InvalidURL", f"no host in {url!r}")
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    query = parts.query
    if params:
        extra = urlencode(params)
        query = f"{query}&{extra}" if query else extra
    target = (parts.path or "/") + (f"?{query}" if query else "")
    shown = f"[{host}]" if ":" in host else host
    if port != _DEFAULT_PORTS[scheme]:
        shown = f"{shown}:{port}"
    try:
        return _Target(scheme, host, port, target.encode("ascii"), shown.encode("idna"))
    except UnicodeError as exc:
        raise HttpError("InvalidURL", f"not ASCII: {url!r}") from exc


class _Connection:
    """One socket (maybe under TLS) and its h11 state."""

    __slots__ = ("h11", "origin", "sock", "stream")

    def __init__(
        self,
        origin: tuple[str, str, int],
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
        sock: trio.SocketStream,
    ) -> None:
        self.origin = origin
        self.stream = stream
        self.sock = sock
        self.h11 = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        # Synchronous: under a cancel it still runs, and the peer sees FIN at once.
        self.sock.socket.close()

    def is_stale(self) -> bool:
        """Whether an idle connection has something to read: the peer closed it (EOF, a TLS
        close_notify) or sent bytes no request asked for. Either way it can't be reused."""
        poller = select.poll()
        poller.register(self.sock.socket.fileno(), select.POLLIN)
        return bool(poller.poll(0))


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolStatistics:
    """The pool's connection counters; see `RestStatistics` for their meaning."""

    connections_idle: int
    connections_busy: int
    connections_opened: int
    connections_closed: int
    connections_closed_by_cancel: int


class HttpPool:
    """Keep-alive HTTP/1.1 connections, per origin, at most ``max_connections`` in all."""

    def __init__(
        self, *, max_connections: int, timeout: float, ssl_context: ssl.SSLContext
    ) -> None:
        self._max = max_connections
        self._timeout = timeout
        self._ssl_context = ssl_context
        # Idle connections by origin, the oldest first; _idle_order keeps every origin's
        # connections in the order they went idle, to pick one to close when the pool is full.
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._idle_order: deque[_Connection] = deque()
        self._busy = 0
        self._freed = trio.Event()
        self._opened = 0
        self._closed = 0
        self._closed_by_cancel = 0

    def statistics(self) -> PoolStatistics:
        """A snapshot of the counters."""
        return PoolStatistics(
            connections_idle=len(self._idle_order),
            connections_busy=self._busy,
            connections_opened=self._opened,
            connections_closed=self._closed,
            connections_closed_by_cancel=self._closed_by_cancel,
        )

    def close(self) -> None:
        """Close every idle connection."""
        for connection in self._idle_order:
            self._close(connection)
        self._idle.clear()
        self._idle_order.clear()

    async def request(
        self,
        method: bytes,
        url: str,
        *,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        params: Mapping[str, str] | None,
    ) -> HttpResult:
        """Send one request and read its whole response.

        Raises:
            HttpError: no response (see the module's docstring).
            HttpTimeout: a phase passed the client's own limit.
        """
        target = _parse_url(url, params)
        head = [
            (b"host", target.host_header),
            (b"user-agent", _USER_AGENT),
            (b"accept", b"*/*"),
            *headers,
        ]
        if body or method in (b"POST", b"PUT", b"PATCH"):
            head.append((b"content-length", str(len(body)).encode()))
        connection = await self._acquire((target.scheme, target.host, target.port))
        self._busy += 1
        reusable = False
        try:
            result = await self._exchange(connection, method, target.target, head, body)
            reusable = (
                connection.h11.our_state is h11.DONE and connection.h11.their_state is h11.DONE
            )
            return result
        except trio.Cancelled:
            self._closed_by_cancel += 1
            raise
        finally:
            self._busy -= 1
            if reusable:
                connection.h11.start_next_cycle()
                self._idle.setdefault(connection.origin, []).append(connection)
                self._idle_order.append(connection)
            else:
                self._close(connection)
            self._freed.set()

    async def _acquire(self, origin: tuple[str, str, int]) -> _Connection:
        while True:
            idle = self._idle.get(origin)
            while idle:
                connection = idle.pop()  # the most recently used: the likeliest to be alive
                self._idle_order.remove(connection)
                if not connection.is_stale():
                    return connection
                self._close(connection)
            if self._busy + len(self._idle_order) < self._max:
                break
            if self._idle_order:
                # Full, and none idle for this origin: make room by closing another origin's
                # oldest idle connection.
                oldest = self._idle_order.popleft()
                self._idle[oldest.origin].remove(oldest)
                self._close(oldest)
            else:
                if self._freed.is_set():
                    self._freed = trio.Event()
                await self._freed.wait()
        # Count the connection while it opens, so that concurrent opens respect the bound.
        self._busy += 1
        try:
            return await self._open(origin)
        finally:
            self._busy -= 1

    async def _open(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        try:
            with trio.fail_after(self._timeout):
                sock = await trio.open_tcp_stream(host, port)
                self._opened += 1
                stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = sock
                if scheme == "https":
                    tls = trio.SSLStream(
                        sock, self._ssl_context, server_hostname=host, https_compatible=True
                    )
                    stream = tls
                    try:
                        await tls.do_handshake()
                    except BaseException:
                        self._closed += 1
                        sock.socket.close()
                        raise
        except trio.TooSlowError as exc:
            raise HttpTimeout(f"connect to {host}:{port}") from exc
        except trio.BrokenResourceError as exc:
            cause = exc.__cause__ or exc
            raise HttpError("ConnectError", f"TLS with {host}:{port} failed: {cause}") from exc
        except OSError as exc:
            raise HttpError("ConnectError", f"{host}:{port}: {exc}") from exc
        return _Connection(origin, stream, sock)

    async def _exchange(
        self,
        connection: _Connection,
        method: bytes,
        target: bytes,
        head: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> HttpResult:
        state = connection.h11
        stream = connection.stream
        try:
            data = state.send(h11.Request(method=method, target=target, headers=head))
            assert data is not None
            if body:
                data += state.send(h11.Data(data=body)) or b""
            data += state.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:
            raise HttpError("LocalProtocolError", str(exc)) from exc
        timeout = self._timeout
        phase = "write"
        try:
            with trio.fail_after(timeout):
                await stream.send_all(data)
            phase = "read"
            response: h11.Response | None = None
            chunks: list[bytes] = []
            size = 0
            while True:
                event = state.next_event()
                if event is h11.NEED_DATA:
                    with trio.fail_after(timeout):
                        received = await stream.receive_some(_RECEIVE_SIZE)
                    state.receive_data(received)
                elif type(event) is h11.Response:
                    response = event
                elif type(event) is h11.Data:
                    size += len(event.data)
                    if size > MAX_BODY:
                        raise HttpError("ReadError", f"response body over {MAX_BODY} bytes")
                    chunks.append(bytes(event.data))
                elif type(event) is h11.EndOfMessage:
                    break
                elif type(event) is h11.ConnectionClosed:
                    raise HttpError("RemoteProtocolError", "the server closed the connection")
                # An h11.InformationalResponse (1xx) is skipped: the final response follows.
        except trio.TooSlowError as exc:
            raise HttpTimeout(phase) from exc
        except h11.RemoteProtocolError as exc:
            raise HttpError("RemoteProtocolError", str(exc)) from exc
        except (trio.BrokenResourceError, OSError) as exc:
            cause = exc.__cause__ or exc
            raise HttpError("ReadError", str(cause) or type(cause).__name__) from exc
        assert response is not None
        return HttpResult(
            status=response.status_code,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers],
            body=b"".join(chunks),
        )

    def _close(self, connection: _Connection) -> None:
        self._closed += 1
        connection.close()


def default_ssl_context() -> ssl.SSLContext:
    """TLS as a browser would: the system's CA store, the certificate and host name checked."""
    return ssl.create_default_context()
