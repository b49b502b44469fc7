"""Real peers and /proc probes for the ops tests.

``HttpServer`` is a small HTTP/1.1 server written by hand on trio streams, on 127.0.0.1, port
0: it keeps connections alive, counts them, echoes requests as JSON, answers any status, and
has a ``/hang`` path that never answers and records when the client closes the connection —
which is what a cancelled request must do.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

# About 3 s of sqlite work on this machine: far more than the 0.5 s a cancel may take, yet
# short enough that a broken cancel (one that waits for the statement) fails instead of hanging
# (a shielded wait can't be cut short by the test's fail_after).
LONG_QUERY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000) "
    "SELECT count(*) AS n FROM c"
)

_REASONS = {200: "OK", 201: "Created", 404: "Not Found", 500: "Internal Server Error"}


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpServer:
    port: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    requests: list[Received] = field(default_factory=list)
    hang_started: trio.Event = field(default_factory=trio.Event)
    hang_closed: trio.Event = field(default_factory=trio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, stream: trio.SocketStream) -> None:
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

    async def _serve(self, stream: trio.SocketStream) -> bool:
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
            self.requests.append(Received(method, target, headers, body))
            if target.startswith("/hang"):
                # Never answer; wait for the client to close its end.
                self.hang_started.set()
                while await _receive(stream):
                    pass
                return True
            await stream.send_all(self._answer(method, target, headers, body))

    @staticmethod
    def _answer(method: str, target: str, headers: dict[str, str], body: bytes) -> bytes:
        content_type = "application/json"
        if target.startswith("/status/"):
            status = int(target.removeprefix("/status/"))
            payload = f"status {status}".encode()
            content_type = "text/plain"
        elif target.startswith("/notjson"):
            status, payload, content_type = 200, b"{not json", "text/plain"
        else:
            status = 200
            payload = json.dumps(
                {"method": method, "target": target, "headers": headers, "body": body.decode()}
            ).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Whatever')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n"
            "X-Repeated: a\r\nX-Repeated: b\r\n\r\n"
        )
        return head.encode() + payload


async def _receive(stream: trio.SocketStream) -> bytes:
    try:
        return await stream.receive_some(65536)
    except trio.BrokenResourceError:  # a reset counts as the end of the connection
        return b""


async def wait_until(condition: Callable[[], object]) -> None:
    """Wait until ``condition()`` is true (callers bound the wait with ``fail_after``)."""
    # What we wait for happens in a worker thread or another process: no trio event tells.
    while not condition():  # noqa: ASYNC110
        await trio.sleep(0.001)


def triosip_threads() -> list[str]:
    """Worker threads running triosip work now (trio renames idle cached threads)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("triosip")]


def open_fds() -> dict[str, str]:
    """This process's open fds and what they point to."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the fd listdir itself used
            continue
    return fds


def child_pids() -> set[int]:
    """This process's child processes, zombies included (proc(5) ``task/*/children``)."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            pids.update(int(pid) for pid in (task / "children").read_text().split())
        except FileNotFoundError:  # a thread that just ended
            continue
    return pids


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when it is gone (reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])
