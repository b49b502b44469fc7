"""A small HTTP/1.1 server on trio and h11, enough for a JSON management interface.

Theory of operation
-------------------
`serve_http` accepts connections on its listeners and serves each in a task of the
caller's nursery (named "MI <client address>"), so every connection belongs to the MI and
ends with it. A connection reads one request at a time with h11 (sans-IO: bytes in,
events out), hands it to the handler, writes the response, and keeps the connection open
for the next (HTTP/1.1 keep-alive) until the client closes it or stays silent for
``idle_timeout``.

What a client can make the server hold is bounded: the request head
(``max_incomplete_event_size``, else 431), the body (``max_body``, else 413), the time
to send a request and to take its response (``idle_timeout``), and the number of
connections. Malformed HTTP gets the status h11 suggests (``error_status_hint``) and a
JSON error; an exception in the handler gets a 500 whose body says to read the log,
never a traceback.

Connections are counted in two pools, so that clients who may not use the server can
never keep out those who may. A new connection is *pending* until it has sent a complete
request head that the caller's ``gate`` admits (the MI's token rule); it must do so
within ``head_timeout`` of its accept (5 s), or it is closed, and beyond ``max_pending``
pending connections the oldest is closed to make room for the newest (so that silent
connections cannot exhaust file descriptors either). A head the gate refuses gets the
gate's answer (401) and its connection is closed. Only an admitted connection takes one
of the ``max_connections`` places (one too many gets a 503 and is closed), and keeps it,
between requests too, until it closes or is silent for ``idle_timeout``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import http
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import h11
import trio

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"

# accept() errors that mean "out of resources, try again later" (as trio.serve_listeners).
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_BACKOFF = 0.1
_RECEIVE_SIZE = 16384
# How long a refused connection (one too many, or without the token) may take to read
# its answer.
_REJECT_TIMEOUT = 1.0
_TOO_MANY = "too many MI connections; try again later"


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpLimits:
    """What one client may make the server hold.

    Attributes:
        max_head: the most bytes of a request line and headers.
        max_body: the most bytes of a request body.
        idle_timeout: seconds an admitted connection may take to send a request (or be
            silent between two), and to take a response.
        max_connections: admitted connections served at once (those whose request head
            the gate let in).
        head_timeout: seconds a new connection has, from its accept, to send a complete
            request head that the gate lets in; closed otherwise.
        max_pending: connections at once that have not been admitted yet; one more
            closes the oldest of them.
    """

    max_head: int = 16384
    max_body: int = 65536
    idle_timeout: float = 30.0
    max_connections: int = 64
    head_timeout: float = 5.0
    max_pending: int = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRequest:
    """One request, read whole.

    Attributes:
        method: ``"GET"``, ``"POST"``...
        path: the target's path, without the query.
        query: the target's query parameters, each with every value given.
        headers: the headers, by lower-case name (the last value of a repeated one).
        body: the body.
        client: the client's IP address.
    """

    method: str
    path: str
    query: Mapping[str, Sequence[str]]
    headers: Mapping[str, str]
    body: bytes
    client: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpResponse:
    """One response.

    Attributes:
        status: the status code.
        body: the body.
        content_type: its Content-Type.
        headers: more headers.
    """

    status: int
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    headers: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def json(
        cls, status: int, document: Any, headers: tuple[tuple[str, str], ...] = ()
    ) -> HttpResponse:
        """A JSON response."""
        body = json.dumps(document, separators=(",", ":"), allow_nan=False) + "\n"
        return cls(status=status, body=body.encode(), headers=headers)

    @classmethod
    def error(
        cls, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> HttpResponse:
        """A JSON error: ``{"error": message, "status": status}``."""
        return cls.json(status, {"error": message, "status": status}, headers)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]
Gate = Callable[[HttpRequest], "HttpResponse | None"]
"""Whether a request head may come in: None lets it in, a response refuses it (the
request's body is empty: it has not been read)."""


class _TooLarge(Exception):
    pass


async def serve_http(
    listeners: Sequence[trio.SocketListener],
    handler: Handler,
    *,
    limits: HttpLimits,
    nursery: trio.Nursery,
    gate: Gate | None = None,
) -> None:
    """Accept connections on `listeners` and serve each in a task of `nursery`; never
    returns.

    Args:
        listeners: the bound listeners; closed when this returns.
        handler: makes the response of each request.
        limits: the bounds of each connection, and how many may run at once.
        nursery: where the accept loops and the connections run.
        gate: which request heads may come in (module doc); every one when None.
    """
    server = _Server(handler, limits, nursery, gate)
    try:
        async with trio.open_nursery() as accepting:
            for listener in listeners:
                accepting.start_soon(
                    server.accept_loop, listener, name=f"MI accept {_sockname(listener)}"
                )
    finally:
        for listener in listeners:
            with trio.CancelScope(shield=True):
                await listener.aclose()


class _Server:
    def __init__(
        self, handler: Handler, limits: HttpLimits, nursery: trio.Nursery, gate: Gate | None
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.nursery = nursery
        self.gate = gate
        self.connections = 0
        # The pending connections (module doc), oldest first: each one's scope, whose
        # deadline is its head timeout, and which closes it when cancelled.
        self.pending: dict[trio.CancelScope, str] = {}

    async def accept_loop(self, listener: trio.SocketListener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                logger.error("MI accept: %s; trying again in %.1f s", exc, _ACCEPT_BACKOFF)
                await trio.sleep(_ACCEPT_BACKOFF)
                continue
            client = _peer(stream)
            if len(self.pending) >= self.limits.max_pending:
                oldest = next(iter(self.pending))
                logger.debug(
                    "MI: %d connections without a request yet; closing %s's for %s",
                    len(self.pending),
                    self.pending.pop(oldest),
                    client,
                )
                oldest.cancel()
            # Registered here, not in the task, so that the bound holds before it runs.
            pending = trio.CancelScope(deadline=trio.current_time() + self.limits.head_timeout)
            self.pending[pending] = client
            self.nursery.start_soon(
                self.serve_connection, stream, client, pending, name=f"MI {client}"
            )

    async def serve_connection(
        self, stream: trio.SocketStream, client: str, pending: trio.CancelScope
    ) -> None:
        admitted = False
        try:
            async with stream:
                admitted = await self._admit(stream, client, pending)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.debug("MI %s: connection lost: %s", client, exc)
        finally:
            self.pending.pop(pending, None)
            if admitted:
                self.connections -= 1

    async def _admit(
        self, stream: trio.SocketStream, client: str, pending: trio.CancelScope
    ) -> bool:
        """Serve the connection; whether it was admitted (and so counted) on its way."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head)
        head = await self._receive_head(conn, stream, client, pending)
        self.pending.pop(pending, None)
        if head is None:
            return False
        if self.connections >= self.limits.max_connections:
            logger.warning("MI: %d connections already; refusing %s", self.connections, client)
            await _refuse(conn, stream, HttpResponse.error(503, _TOO_MANY))
            return False
        self.connections += 1
        await self._converse(conn, stream, client, head)
        return True

    async def _receive_head(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        client: str,
        scope: trio.CancelScope,
    ) -> HttpRequest | None:
        """The next request head (its body not read yet) if the gate lets it in; None
        once the connection has been closed, answered, timed out or evicted."""
        head: HttpRequest | None = None
        with scope:
            try:
                head = await _receive_head(conn, stream, client, self.limits)
            except h11.RemoteProtocolError as exc:
                await _send_error(conn, stream, exc.error_status_hint, str(exc))
                return None
            except _TooLarge:
                message = f"request body larger than {self.limits.max_body} bytes"
                await _send_error(conn, stream, 413, message)
                return None
        if head is None:
            return None  # closed by the client, silent for too long, or evicted
        refusal = self.gate(head) if self.gate is not None else None
        if refusal is not None:
            await _refuse(conn, stream, refusal)
            return None
        return head

    async def _converse(
        self, conn: h11.Connection, stream: trio.SocketStream, client: str, head: HttpRequest
    ) -> None:
        idle = self.limits.idle_timeout
        while True:
            request: HttpRequest | None = None
            with trio.move_on_after(idle):
                try:
                    request = await _receive_body(conn, stream, head, self.limits.max_body)
                except h11.RemoteProtocolError as exc:
                    await _send_error(conn, stream, exc.error_status_hint, str(exc))
                    return
                except _TooLarge:
                    message = f"request body larger than {self.limits.max_body} bytes"
                    await _send_error(conn, stream, 413, message)
                    return
            if request is None:
                return  # closed by the client, or silent for too long
            try:
                response = await self.handler(request)
            except Exception:
                logger.exception("MI %s %s from %s failed", request.method, request.path, client)
                response = HttpResponse.error(500, "internal error: see the proxy's log")
            with trio.move_on_after(idle) as sending:
                await _send_response(conn, stream, response)
            if sending.cancelled_caught or conn.our_state is not h11.DONE:
                return
            if conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
            # The next request passes the gate too; an admitted connection keeps its place
            # meanwhile, for idle_timeout at most.
            next_head = await self._receive_head(
                conn, stream, client, trio.CancelScope(deadline=trio.current_time() + idle)
            )
            if next_head is None:
                return
            head = next_head


async def _receive_head(
    conn: h11.Connection, stream: trio.SocketStream, client: str, limits: HttpLimits
) -> HttpRequest | None:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(_RECEIVE_SIZE))
        elif isinstance(event, h11.Request):
            # h11 bounds a head that arrives in pieces; one that arrives whole is parsed
            # whatever its size, so it is measured here.
            size = len(event.method) + len(event.target) + 12
            size += sum(len(name) + len(value) + 4 for name, value in event.headers.raw_items())
            if size > limits.max_head:
                raise h11.RemoteProtocolError(
                    f"request head larger than {limits.max_head} bytes", error_status_hint=431
                )
            length = _header(event.headers, b"content-length")
            if length is not None and length.isdigit() and int(length) > limits.max_body:
                raise _TooLarge
            return _request(event, b"", client)
        else:  # ConnectionClosed (PAUSED never comes before a request)
            return None


async def _receive_body(
    conn: h11.Connection, stream: trio.SocketStream, head: HttpRequest, max_body: int
) -> HttpRequest | None:
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(_RECEIVE_SIZE))
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_body:
                raise _TooLarge
        elif isinstance(event, h11.EndOfMessage):
            return dataclasses.replace(head, body=bytes(body))
        else:  # ConnectionClosed halfway through the body
            return None


def _request(head: h11.Request, body: bytes, client: str) -> HttpRequest:
    target = head.target.decode("ascii", "replace")
    parts = urlsplit(target)
    headers = {
        name.decode("ascii", "replace"): value.decode("latin-1") for name, value in head.headers
    }
    return HttpRequest(
        method=head.method.decode("ascii", "replace"),
        path=parts.path,
        query=parse_qs(parts.query, keep_blank_values=True),
        headers=headers,
        body=body,
        client=client,
    )


async def _send_response(
    conn: h11.Connection, stream: trio.SocketStream, response: HttpResponse, *, close: bool = False
) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("cache-control", "no-store"),
        *response.headers,
    ]
    if close:
        headers.append(("connection", "close"))
    data = conn.send(
        h11.Response(
            status_code=response.status,
            headers=headers,
            reason=_reason(response.status).encode(),
        )
    )
    data = (data or b"") + (conn.send(h11.Data(data=response.body)) or b"")
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


async def _send_error(
    conn: h11.Connection, stream: trio.SocketStream, status: int, message: str
) -> None:
    # h11: after a protocol error, a response can still go out if none has started.
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    await _send_response(conn, stream, HttpResponse.error(status, message), close=True)


async def _refuse(conn: h11.Connection, stream: trio.SocketStream, response: HttpResponse) -> None:
    # A refusal (no token, one connection too many) goes out before the request's body
    # is read (h11 lets a server answer early), and the connection closes after it.
    with (
        trio.move_on_after(_REJECT_TIMEOUT),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await _send_response(conn, stream, response, close=True)


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _peer(stream: trio.SocketStream) -> str:
    try:
        address = stream.socket.getpeername()
    except OSError:
        return "?"
    return str(address[0]) if isinstance(address, tuple) else str(address)


def _sockname(listener: trio.SocketListener) -> str:
    address = listener.socket.getsockname()
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
