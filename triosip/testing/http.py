"""One scriptable HTTP/1.1 server on 127.0.0.1 for the tests of REST ops, of routes that
call a web service, and for ``triosip check``'s drill (the ``@http`` stand-in).

Written by hand on trio streams, so that a test sees what a client does to a connection:
it keeps connections alive and counts them, records every request, and answers by path:

- a path the test scripted (`HttpServer.handlers`): what its handler returns;
- ``/hang``: never answers, and records when the client closes the connection (which is
  what a cancelled request must do); ``/half``: sends the head and 10 of 100 body bytes,
  then the same;
- ``/status/N``: status N; ``/notjson``: a 200 whose body is no JSON;
- anything else: 200 with the request echoed as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import trio

_REASONS = {200: "OK", 201: "Created", 404: "Not Found", 500: "Internal Server Error"}


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request the server read."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """What a scripted path answers."""

    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, document: object) -> HttpAnswer:
        return cls(status, json.dumps(document).encode())


Handler = Callable[[HttpRequest], HttpAnswer]


@dataclass
class HttpServer:
    """The server's state: what it answers (`handlers`, by path) and what it saw."""

    handlers: dict[str, Handler] = field(default_factory=dict)
    port: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    requests: list[HttpRequest] = field(default_factory=list)
    hanging: int = 0
    hangs_closed_by_client: int = 0
    hang_started: trio.Event = field(default_factory=trio.Event)
    hang_closed: trio.Event = field(default_factory=trio.Event)
    changed: trio.Event = field(default_factory=trio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def targets(self) -> list[str]:
        """The request targets received, in order."""
        return [request.target for request in self.requests]

    def _note(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.connections_opened += 1
        hung = False
        try:
            async with stream:
                hung = await self._serve(stream)
        finally:
            # Counted before hang_closed is set: a test woken by it sees the count.
            self.connections_closed += 1
            if hung:
                self.hang_closed.set()
            self._note()

    async def _serve(self, stream: trio.abc.Stream) -> bool:
        """Serve the connection's requests; whether it ended hanging on one."""
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await _receive(stream)
                if not data:
                    return False
                buffer += data
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _version = request_line.split(" ")
            headers = {}
            for line in lines:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            while len(buffer) < length:
                data = await _receive(stream)
                if not data:
                    return False
                buffer += data
            body, buffer = buffer[:length], buffer[length:]
            request = HttpRequest(method, target, headers, body)
            self.requests.append(request)
            if request.path in ("/hang", "/half"):
                if request.path == "/half":
                    await stream.send_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
                    )
                self.hanging += 1
                self.hang_started.set()
                self._note()
                # Never finish the answer; wait until the client closes its end.
                while await _receive(stream):
                    pass
                self.hangs_closed_by_client += 1
                return True
            await stream.send_all(_encode(self._answer(request)))

    def _answer(self, request: HttpRequest) -> HttpAnswer:
        handler = self.handlers.get(request.path)
        if handler is not None:
            return handler(request)
        if request.path.startswith("/status/"):
            status = int(request.path.removeprefix("/status/"))
            return HttpAnswer(status, f"status {status}".encode(), "text/plain")
        if request.path == "/notjson":
            return HttpAnswer(200, b"<html>{not json</html>", "text/html")
        return HttpAnswer.json(
            200,
            {
                "method": request.method,
                "target": request.target,
                "headers": request.headers,
                "body": request.body.decode(),
            },
        )


def _encode(answer: HttpAnswer) -> bytes:
    head = (
        f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Whatever')}\r\n"
        f"Content-Type: {answer.content_type}\r\nContent-Length: {len(answer.body)}\r\n"
        "X-Repeated: a\r\nX-Repeated: b\r\n\r\n"
    )
    return head.encode() + answer.body


async def _receive(stream: trio.abc.Stream) -> bytes | bytearray:
    try:
        return await stream.receive_some(65536)
    except trio.BrokenResourceError:  # a reset is the end of the connection too
        return b""


async def start_http_server(
    nursery: trio.Nursery, handlers: dict[str, Handler] | None = None
) -> HttpServer:
    """An `HttpServer` on a free port of 127.0.0.1, serving in `nursery` (each connection
    in a task of it) until the nursery ends."""
    server = HttpServer(handlers=dict(handlers or {}))
    listeners = await nursery.start(
        partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1", handler_nursery=nursery)
    )
    server.port = listeners[0].socket.getsockname()[1]
    return server
