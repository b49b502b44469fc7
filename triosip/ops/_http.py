"""A small HTTP/1.1 client on trio streams: httptools parses, a keep-alive pool per origin.

Theory of operation: `HttpPool.request` borrows an idle connection to the URL's origin
(scheme, host, port) or opens one (TCP, then TLS through `trio.SSLStream` for https), writes
the whole request in one send (a request is a few lines of text, written here and checked
against header injection), and feeds what it receives to the connection's response parser
(httptools: llhttp, Node's HTTP parser, in C; sans-IO: bytes in, callbacks out) until the
response's end. (h11, in pure Python, cost more per exchange than a SIP transaction does;
llhttp costs a few microseconds.) A connection whose exchange ended cleanly, and that both
sides agree to keep alive (RFC 9112 §9.3), goes back to its origin's idle list; any other
outcome — an error, a timeout, a cancel — closes its socket at once, synchronously (no await,
so no cancel can skip it): the peer sees the close, and the pool never holds a connection
whose HTTP state is half-way through an exchange.

The pool counts every open connection, idle or busy, against ``max_connections``: a request
that finds none idle for its origin and the pool full closes the oldest idle connection of
another origin, or else waits for a busy one to finish.

Failures are `HttpError` (with httpx's names for the kinds, which the scripts' logs and tests
already know: ``ConnectError``, ``ReadError``, ``RemoteProtocolError``, ``LocalProtocolError``,
``InvalidURL``, ``UnsupportedProtocol``) or `HttpTimeout` (one phase passed the client's
own limit).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import select
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

import httptools
import trio

if TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger(__name__)

# The largest response body read (bytes); past it the request fails and the connection closes,
# so a runaway service can't fill the proxy's memory.
MAX_BODY = 16 * 1024 * 1024
# The most bytes of status line and header fields read (h11's limit too).
MAX_HEAD = 64 * 1024
_RECEIVE_SIZE = 65536
_DEFAULT_PORTS = {"http": 80, "https": 443}
_USER_AGENT = "triosip"
# RFC 9110 §5.1, §5.5, §9.1: a field name and a method are tokens; a field value holds no
# CR, LF or NUL (which would let a value from a script smuggle in header lines).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[^\x00\r\n]*")
# RFC 9112 §3.2: the request target is visible ASCII, no space.
_TARGET = re.compile(r"[\x21-\x7e]+")


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


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    target: str  # path and query, as sent in the request line
    host_header: str


def _parse_url(url: str, params: Mapping[str, str] | None) -> _Target:
    scheme, host, port, path, query, host_header = _split_url(url)
    if params:
        extra = urlencode(params)
        query = f"{query}&{extra}" if query else extra
    target = path + (f"?{query}" if query else "")
    if not _TARGET.fullmatch(target):
        raise HttpError("InvalidURL", f"not visible ASCII: {target!r} (percent-encode it)")
    return _Target(scheme, host, port, target, host_header)


@functools.lru_cache(maxsize=1024)
def _split_url(url: str) -> tuple[str, str, int, str, str, str]:
    # Cached: a script asks the same few URLs over and over, and urlsplit costs more than
    # the parsing of the response does.
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
    shown = f"[{host}]" if ":" in host else host
    if not shown.isascii():
        raise HttpError("InvalidURL", f"not an ASCII host name: {host!r}")
    if port != _DEFAULT_PORTS[scheme]:
        shown = f"{shown}:{port}"
    return scheme, host, port, parts.path or "/", parts.query, shown


@functools.lru_cache(maxsize=1024)
def _plain_request(method: str, url: str) -> tuple[_Target, bytes]:
    # A request with no header fields, parameters or body of its own (a script's GET of a
    # URL it asks over and over) is the same bytes each time: made once, checked once.
    target = _parse_url(url, None)
    extra = ["content-length: 0"] if method in ("POST", "PUT", "PATCH") else []
    return target, _request_head(method, target, None, extra)


def _request_head(
    method: str, target: _Target, headers: Mapping[str, str] | None, extra: list[str]
) -> bytes:
    """The request line and header fields, checked: RFC 9112 §3 and §5."""
    if not _TOKEN.fullmatch(method):
        raise HttpError("LocalProtocolError", f"not a method: {method!r}")
    lines = [
        f"{method} {target.target} HTTP/1.1",
        f"host: {target.host_header}",
        f"user-agent: {_USER_AGENT}",
        "accept: */*",
        *extra,
    ]
    if headers:
        for name, value in headers.items():
            if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
                raise HttpError("LocalProtocolError", f"not a header field: {name!r}: {value!r}")
            lines.append(f"{name}: {value}")
    lines.append("\r\n")
    try:
        return "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise HttpError("LocalProtocolError", f"a header field is not Latin-1: {exc}") from exc


class _Response:
    """The parser's callbacks (httptools calls them from feed_data): one response's parts."""

    __slots__ = (
        "body",
        "complete",
        "extra",
        "framed",
        "headers",
        "headers_done",
        "keep_alive",
        "parser",
        "size",
        "status",
    )

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.reset()

    def reset(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.status = 0
        self.keep_alive = False
        self.headers_done = False
        self.complete = False
        self.framed = False  # a Content-Length or a Transfer-Encoding says where it ends
        self.extra = False  # bytes came after the response's end: the connection is spoilt

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.decode("latin-1").lower()
        if lower in ("content-length", "transfer-encoding"):
            self.framed = True
        self.headers.append((lower, value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        # Read now: the parser forgets both once the message ends.
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size <= MAX_BODY:
            self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class _Connection:
    """One socket (maybe under TLS) and its response parser."""

    __slots__ = ("fd", "origin", "poller", "response", "sock", "tls")

    def __init__(
        self,
        origin: tuple[str, str, int],
        sock: trio.SocketStream,
        tls: trio.SSLStream[trio.SocketStream] | None,
    ) -> None:
        self.origin = origin
        self.sock = sock
        self.fd = sock.socket.fileno()
        self.tls = tls
        self.response = _Response()
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLIN)

    # Without TLS, the bytes go straight through the non-blocking fd: trio's SocketStream
    # and socket wrappers cost more per request than the parser does, and one task at a time
    # uses a connection, which is what their conflict checks are for.

    async def send_all(self, data: bytes) -> None:
        if self.tls is not None:
            await self.tls.send_all(data)
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.fd)

    async def receive_some(self) -> bytes:
        if self.tls is not None:
            return bytes(await self.tls.receive_some(_RECEIVE_SIZE))
        while True:
            await trio.lowlevel.wait_readable(self.fd)  # the checkpoint of the exchange
            try:
                return os.read(self.fd, _RECEIVE_SIZE)
            except BlockingIOError:
                continue

    def close(self) -> None:
        # Synchronous: under a cancel it still runs, and the peer sees FIN at once.
        self.sock.socket.close()

    def is_stale(self) -> bool:
        """Whether an idle connection has something to read: the peer closed it (EOF, a TLS
        close_notify) or sent bytes no request asked for. Either way it can't be reused."""
        return bool(self.poller.poll(0))


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
        # connections in the order they went idle (a dict: an ordered set), to pick one to
        # close when the pool is full.
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._idle_order: dict[_Connection, None] = {}
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
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        body: bytes,
        content_type: str | None,
    ) -> HttpResult:
        """Send one request and read its whole response.

        Raises:
            HttpError: no response (see the module's docstring).
            HttpTimeout: a phase passed the client's own limit.
        """
        if headers is None and params is None and not body and content_type is None:
            target, data = _plain_request(method, url)
        else:
            target = _parse_url(url, params)
            extra = [f"content-type: {content_type}"] if content_type else []
            if body or method in ("POST", "PUT", "PATCH"):
                extra.append(f"content-length: {len(body)}")
            data = _request_head(method, target, headers, extra) + body
        connection = await self._acquire((target.scheme, target.host, target.port))
        self._busy += 1
        reusable = False
        try:
            result, reusable = await self._exchange(connection, data, head_only=method == "HEAD")
            return result
        except trio.Cancelled:
            self._closed_by_cancel += 1
            raise
        finally:
            self._busy -= 1
            if reusable:
                self._idle.setdefault(connection.origin, []).append(connection)
                self._idle_order[connection] = None
            else:
                self._close(connection)
            self._freed.set()

    async def _acquire(self, origin: tuple[str, str, int]) -> _Connection:
        while True:
            idle = self._idle.get(origin)
            while idle:
                connection = idle.pop()  # the most recently used: the likeliest to be alive
                del self._idle_order[connection]
                if not connection.is_stale():
                    return connection
                self._close(connection)
            if self._busy + len(self._idle_order) < self._max:
                break
            if self._idle_order:
                # Full, and none idle for this origin: make room by closing another origin's
                # oldest idle connection.
                oldest = next(iter(self._idle_order))
                del self._idle_order[oldest]
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
                tls = None
                if scheme == "https":
                    tls = trio.SSLStream(
                        sock, self._ssl_context, server_hostname=host, https_compatible=True
                    )
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
        return _Connection(origin, sock, tls)

    async def _exchange(
        self, connection: _Connection, data: bytes, *, head_only: bool
    ) -> tuple[HttpResult, bool]:
        """The response to ``data``, and whether the connection can carry another request."""
        response = connection.response
        response.reset()
        deadline = trio.current_time() + self._timeout
        # The client's own limit is a safety net: where a tighter deadline holds already (the
        # script's timeout=, a transaction timer), that deadline ends the exchange before any
        # phase could pass the limit (each phase's limit only moves later), so the net is left
        # out: its cancel scope, and a deadline move per read, cost more than the parsing of
        # the response does. (Should that deadline move later meanwhile, as a transaction's
        # does from fr_timeout to fr_inv_timeout, it still bounds the exchange.)
        scope = (
            None
            if trio.current_effective_deadline() <= deadline
            else trio.CancelScope(deadline=deadline)
        )
        phase = "write"
        try:
            if scope is None:
                await connection.send_all(data)
                phase = "read"
                await self._read_response(connection, None, head_only=head_only)
            else:
                # One scope, its deadline moved at each phase: the write, then each read.
                with scope:
                    await connection.send_all(data)
                    phase = "read"
                    await self._read_response(connection, scope, head_only=head_only)
        except httptools.HttpParserError as exc:
            raise HttpError("RemoteProtocolError", str(exc) or type(exc).__name__) from exc
        except (trio.BrokenResourceError, OSError) as exc:
            cause = exc.__cause__ or exc
            kind = "WriteError" if phase == "write" else "ReadError"
            raise HttpError(kind, str(cause) or type(cause).__name__) from exc
        if scope is not None and scope.cancelled_caught:
            raise HttpTimeout(phase)
        reusable = (
            response.complete and not response.extra and not head_only and response.keep_alive
        )
        result = HttpResult(
            status=response.status, headers=response.headers, body=b"".join(response.body)
        )
        return result, reusable

    async def _read_response(
        self, connection: _Connection, scope: trio.CancelScope | None, *, head_only: bool
    ) -> None:
        response = connection.response
        parser = response.parser
        head_bytes = 0
        while True:
            if scope is not None:
                scope.deadline = trio.current_time() + self._timeout
            received = await connection.receive_some()
            if not received:
                if response.headers_done and not response.framed:
                    return  # RFC 9112 §6.3 rule 8: the body ends where the connection does
                raise HttpError(
                    "RemoteProtocolError", "the server closed the connection mid-response"
                )
            if not response.headers_done:
                head_bytes += len(received)
            parser.feed_data(received)
            if response.headers_done and response.status < 200:
                # RFC 9110 §15.2: a 1xx answers an Expect or an Upgrade, and no request here
                # has either.
                raise HttpError("RemoteProtocolError", f"an unasked-for {response.status}")
            if response.complete:
                return
            if head_only and response.headers_done:
                # RFC 9110 §9.3.2: no body. (The connection is not reused: its parser, which
                # does not know it answered a HEAD, waits for one.)
                return
            if response.size > MAX_BODY:
                raise HttpError("ReadError", f"response body over {MAX_BODY} bytes")
            if not response.headers_done and head_bytes > MAX_HEAD:
                raise HttpError("RemoteProtocolError", f"response head over {MAX_HEAD} bytes")

    def _close(self, connection: _Connection) -> None:
        self._closed += 1
        connection.close()


def rest_ssl_context(ca_file: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """TLS as a browser would: the system's CA store, the certificate and host name checked.

    Args:
        ca_file: a PEM file of CA certificates to trust as well (a private CA's).

    Raises:
        OSError: `ca_file` can't be read, or holds no certificate (`ssl.SSLError`).
    """
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    return context
