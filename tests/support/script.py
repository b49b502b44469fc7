"""Real peers, real resources and leak probes for the cancellation tests (docs/cancellation.md, "The
cancellation contract").

- `Caller`: a UAC on a raw UDP socket on 127.0.0.1. It sends hand-written INVITEs, CANCELs
  and retransmissions, files every response under its call with the time it came, and ACKs
  each non-2xx final answer to an INVITE at once, as a UA's transaction layer would
  (RFC 3261 §17.1.1.3), so that the proxy's INVITE server transaction ends T4 later.
- `Callee`: a UAS on a raw UDP socket that rings until CANCELled, for routes that relay.
- `open_harness`: a proxy running given routes in-process (through `serve_triosip`), with
  a real sqlite file behind ``req.db``, a real pooled HTTP client behind ``req.rest``, and
  the scriptable `HttpServer` (which can hang) for it to ask.
- `assert_nothing_left`: the difference of two `Resources` snapshots (``triosip.testing.leaks``)
  is what a transaction left behind, and the harness's pools are whole again.
- `pending_op_routes`: routes whose ops (db, rest, exec, thread, sleep) would run a minute,
  run by ``async_``, ``await`` or ``req.call``, that write what ran to a `Journal`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from tests.support.ops import LONG_QUERY, wait_until
from triosip.app import Running, serve_triosip
from triosip.ops import open_database, open_rest_client
from triosip.script import ScriptEnvironment
from triosip.script.api import Op, Routes, exec_, in_thread, sleep
from triosip.sip import Request, Response, build_response, parse_message
from triosip.testing import postgres
from triosip.testing.http import HttpAnswer, HttpRequest, HttpServer, start_http_server
from triosip.testing.leaks import (
    Resources,
    busy_threads,
    child_pids,
    group_running,
    running,
)
from triosip.testing.proxy import local_config
from triosip.transaction import TimerConfig
from triosip.transport import Address

if TYPE_CHECKING:
    import threading
    from collections.abc import AsyncIterator, Callable

    from triosip.config import Config
    from triosip.ops import Database, RestClient
    from triosip.proxy import Proxy
    from triosip.script._runner import OpLike
    from triosip.script.api import FailureContext, RequestContext

# RFC 3261 §17.2.1: Timer I is T4 on UDP; short, so that an answered INVITE's server
# transaction (and its task) ends right after the caller's ACK.
TIMERS = TimerConfig(t4=0.01)


# -- SIP peers -----------------------------------------------------------------------------


@dataclass
class Arrival:
    """A response, and `trio.current_time()` when the caller got it."""

    at: float
    response: Response


@dataclass
class Call:
    """One INVITE from the caller, and the responses it got (to the INVITE and its CANCEL)."""

    user: str
    call_id: str
    caller_port: int
    sent_at: float = 0.0
    arrivals: list[Arrival] = field(default_factory=list)

    @property
    def branch(self) -> str:
        return f"z9hG4bK-{self.call_id}"

    def build(self, method: str, *, to_tag: str | None = None) -> bytes:
        """The INVITE, or its CANCEL or ACK: same branch and CSeq number (RFC 3261 §9.1,
        §17.1.1.3)."""
        to = "<sip:callee@example.org>" + (f";tag={to_tag}" if to_tag else "")
        return (
            f"{method} sip:{self.user}@example.org SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.caller_port};branch={self.branch}\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:caller@example.org>;tag=caller\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: 1 {method}\r\n"
            f"Contact: <sip:caller@127.0.0.1:{self.caller_port}>\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    def statuses(self, method: str = "INVITE") -> list[int]:
        """The statuses of the responses to `method`, in the order they came."""
        return [a.response.status for a in self.arrivals if a.response.cseq.method == method]

    def finals(self, method: str = "INVITE") -> list[int]:
        """The final statuses to `method` (a final is retransmitted until ACKed)."""
        return [status for status in self.statuses(method) if status >= 200]

    def final(self, method: str = "INVITE") -> Arrival | None:
        """The first final response to `method`, if any came."""
        for arrival in self.arrivals:
            response = arrival.response
            if response.cseq.method == method and response.status >= 200:
                return arrival
        return None


class Caller:
    """A UAC on a raw UDP socket; `serve` must run for responses to be filed."""

    def __init__(self, sock: trio.socket.SocketType, proxy: Address) -> None:
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.proxy = proxy
        self.calls: dict[str, Call] = {}
        self._changed = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            data = await self.sock.recv(65535)
            message = parse_message(data)
            if not isinstance(message, Response) or message.call_id not in self.calls:
                continue
            self.calls[message.call_id].arrivals.append(Arrival(trio.current_time(), message))
            if message.cseq.method == "INVITE" and message.status >= 300:
                ack = self.calls[message.call_id].build("ACK", to_tag=message.to.tag)
                await self.send(ack)
            self._changed.set()
            self._changed = trio.Event()

    async def send(self, data: bytes) -> None:
        await self.sock.sendto(data, (self.proxy.host, self.proxy.port))

    async def invite(self, user: str) -> Call:
        """Send a new INVITE to ``sip:<user>@example.org``; the user names the test case."""
        call = Call(user, os.urandom(6).hex(), self.port)
        self.calls[call.call_id] = call
        call.sent_at = trio.current_time()
        await self.send(call.build("INVITE"))
        return call

    async def wait_for(self, condition: Callable[[], object]) -> None:
        """Wait until `condition()` holds, re-checking at each response filed."""
        while not condition():
            await self._changed.wait()

    async def final_response(self, call: Call, method: str = "INVITE") -> Arrival:
        await self.wait_for(lambda: call.final(method) is not None)
        final = call.final(method)
        assert final is not None
        return final


class Callee:
    """A UAS on a raw UDP socket that rings: a 180 to each INVITE (again for a
    retransmission); a CANCEL gets its 200, then the INVITE its 487 (RFC 3261 §9.2). Every
    request it gets is kept, with `trio.current_time()` when it came."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.requests: list[tuple[float, Request]] = []
        self._invites: dict[str, Request] = {}

    @property
    def destination(self) -> str:
        return f"udp:127.0.0.1:{self.port}"

    def methods(self) -> list[str]:
        return [request.method for _, request in self.requests]

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            data, source = await self.sock.recvfrom(65535)
            request = parse_message(data)
            if not isinstance(request, Request):
                continue
            self.requests.append((trio.current_time(), request))
            branch = request.top_via.branch or ""
            if request.method == "INVITE":
                self._invites[branch] = request
                await self._answer(request, 180, source)
            elif request.method == "CANCEL":
                await self._answer(request, 200, source)
                if branch in self._invites:
                    await self._answer(self._invites.pop(branch), 487, source)

    async def _answer(self, request: Request, status: int, to: tuple[str, int]) -> None:
        await self.sock.sendto(bytes(build_response(request, status, to_tag="callee")), to)


@contextlib.asynccontextmanager
async def open_callee(nursery: trio.Nursery) -> AsyncIterator[Callee]:
    """A `Callee` on 127.0.0.1, serving in `nursery` until the block ends."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        callee = Callee(sock)
        scope = trio.CancelScope()
        await nursery.start(_serve_until, callee, scope)
        try:
            yield callee
        finally:
            scope.cancel()


async def _serve_until(
    callee: Callee,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await callee.serve(task_status=task_status)


# -- the proxy ----------------------------------------------------------------------------


@dataclass
class Harness:
    """A proxy running `routes` on 127.0.0.1, a caller, and the resources behind them."""

    proxy: Proxy
    caller: Caller
    proxy_scope: trio.CancelScope
    proxy_stopped: trio.Event
    tmp_path: Path
    db: Database | None = None
    rest: RestClient | None = None
    http: HttpServer | None = None

    def transactions_live(self) -> int:
        """Server transactions whose task still runs (any method)."""
        return self.proxy.transactions.statistics().server_active

    async def transactions_ended(self) -> None:
        await wait_until(lambda: self.transactions_live() == 0 and not self.proxy.live)

    def db_pool_whole(self, readers: int) -> bool:
        assert self.db is not None
        stats = self.db.statistics()
        return (
            stats.readers_busy,
            stats.readers_idle,
            stats.readers_waiting,
            stats.writer_busy,
            stats.writers_waiting,
        ) == (0, readers, 0, False, 0)


# The database's reader connections: queries beyond that many wait for one.
READERS = 4


async def _serve_proxy(
    config: Config,
    routes: Routes,
    environment: ScriptEnvironment,
    stopped: trio.Event,
    *,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    # The launch nursery and the proxy, in a scope that the test may cancel (the last step
    # of a shutdown) while the resources, opened by the harness, stay open.
    try:
        await serve_triosip(config, routes=routes, environment=environment, task_status=task_status)
    finally:
        stopped.set()


def _ok(_request: HttpRequest) -> HttpAnswer:
    return HttpAnswer.json(200, {"ok": True})


@contextlib.asynccontextmanager
async def open_harness(
    routes: Routes,
    tmp_path: Path,
    *,
    fr_timeout: float,
    timers: TimerConfig = TIMERS,
    resources: bool = True,
    db_url: str | None = None,
) -> AsyncIterator[Harness]:
    """Run `routes` in a proxy on 127.0.0.1 with a caller, until the block ends.

    Args:
        routes: the routes.
        tmp_path: where the sqlite file and the tests' pid files go.
        fr_timeout: the proxy's fr_timeout (fr_inv_timeout is 10 times that).
        timers: T1, T2, T4 (a CANCEL's server transaction lasts 64*T1 after its 200).
        resources: whether to open a database, a REST client and an HTTP server; leave
            them out under `autojump_clock` (opening a database waits for a thread, and the
            clock would jump meanwhile).
        db_url: the database; a sqlite file in `tmp_path` by default (`database_url`).
    """
    async with contextlib.AsyncExitStack() as stack:
        db = rest = http = None
        if resources:
            db = await stack.enter_async_context(
                open_database(db_url or f"sqlite:///{tmp_path / 'cancel.db'}", readers=READERS)
            )
            rest = await stack.enter_async_context(open_rest_client())
        sock = stack.enter_context(trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        await sock.bind(("127.0.0.1", 0))
        nursery = await stack.enter_async_context(trio.open_nursery())
        if resources:
            http = await start_http_server(nursery, {"/ok": _ok})
        environment = ScriptEnvironment(db=db, rest=rest, max_launched=10)
        config = local_config(
            listen=(Address("udp", "127.0.0.1", 0),),
            fr_timeout=fr_timeout,
            fr_inv_timeout=10 * fr_timeout,
            t1=timers.t1,
            t2=timers.t2,
            t4=timers.t4,
        )
        stopped = trio.Event()
        running: Running = await nursery.start(_serve_proxy, config, routes, environment, stopped)
        caller = Caller(sock, running.listeners[0])
        await nursery.start(caller.serve)
        yield Harness(running.proxy, caller, running.scope, stopped, tmp_path, db, rest, http)
        nursery.cancel_scope.cancel()


# -- routes whose ops stay pending ---------------------------------------------------------

# How long the plain function of the "thread" kind blocks: a thread can't be stopped, so a
# cancel waits for it (docs/architecture.md: a plain function runs in a worker thread).
THREAD_SECONDS = 0.3

# How long the op of the "short" kind takes: it ends well within a shutdown's grace.
SHORT_SECONDS = 0.05

# Ops that would take a minute if nothing cancelled them, by kind.
PENDING_KINDS = ("db", "pg", "rest", "rest-half", "exec", "exec-shell", "thread")

# What the "pg" kind runs: a minute on the PostgreSQL server, found in pg_stat_activity by
# its marker.
PG_MARKER = "pending-op"


def database_url(kind: str) -> str | None:
    """The database for ops of `kind`: the test PostgreSQL server's for ``pg`` (the db op on
    PostgreSQL), else None (a sqlite file)."""
    if kind != "pg":
        return None
    try:
        return postgres.shared_server().url
    except postgres.NoPostgres as exc:
        pytest.fail(str(exc), pytrace=False)


class Journal:
    """What the routes did, per Call-ID: (call_id, what, detail) in the order it happened."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, Any]] = []

    def add(self, call_id: str, what: str, detail: Any = None) -> None:
        self.entries.append((call_id, what, detail))

    def of(self, call_id: str, what: str) -> list[Any]:
        return [d for c, w, d in self.entries if c == call_id and w == what]

    def kinds(self, call_id: str) -> list[str]:
        return [w for c, w, _ in self.entries if c == call_id]


def blocking_work() -> str:
    """A plain blocking function: it has no async implementation, so it runs in a thread."""
    time.sleep(THREAD_SECONDS)
    return "done"


def pid_file(directory: str, call_id: str) -> Path:
    return Path(directory) / f"{call_id}.pids"


def pids_written(path: Path) -> list[int]:
    """The pids a shell wrote to `path`, once it wrote its whole line; else []."""
    text = path.read_text() if path.exists() else ""
    return [int(pid) for pid in text.split()] if text.endswith("\n") else []


def pending_op(req: RequestContext, kind: str, held: threading.Event | None = None) -> OpLike:
    """An op of `kind` that runs for about a minute unless cancelled; ``thread-held`` is a
    plain function that blocks until the test sets `held`."""
    params = req.params
    if kind == "db":
        return req.db.query(LONG_QUERY)
    if kind == "pg":
        return req.db.query(postgres.sleep_sql(PG_MARKER, 60))
    if kind in ("rest", "rest-half"):
        return req.rest.get(f"{params['http']}/{'half' if kind == 'rest-half' else 'hang'}")
    if kind == "exec":
        return exec_(["sleep", "60"])
    if kind == "exec-shell":
        # A shell whose grandchild (the background sleep) is in the same process group.
        path = pid_file(params["dir"], req.call_id)
        return exec_(f"sleep 60 & echo $$ $! > {path}; wait")
    if kind == "thread":
        return blocking_work
    if kind == "thread-held":
        assert held is not None
        return partial(held.wait, 5)
    if kind == "sleep":
        return sleep(60)
    if kind == "short":
        return sleep(SHORT_SECONDS)
    raise AssertionError(f"unknown kind {kind}")


def pending_op_routes(journal: Journal, held: threading.Event | None = None) -> Routes:
    """Routes for the users ``<kind>.<mode>.<armed>``: the request route runs an op of
    `kind` (see `pending_op`) by ``async_`` (mode ``async``), plain ``await`` (``await``) or
    ``req.call`` (``call``), with a failure route armed when the third part is ``armed``.

    Each route writes to `journal`: ``request`` when the request route starts, ``after
    await`` if an awaited op returned, ``resume`` with (result, error) if the resume route
    ran, ``failure`` with the status the failure route saw. The failure route answers
    ``480 Failure Route Saw <status>``; the resume route and the code after an await answer
    ``500 Resumed`` (which no cancellation test may see)."""
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        if req.is_stateless:
            return  # an ACK that came after its transaction ended (a retransmitted final's)
        journal.add(req.call_id, "request")
        assert req.ruri_user is not None
        kind, mode, armed = req.ruri_user.split(".")
        if armed == "armed":
            req.on_failure(failed)
        op = pending_op(req, kind, held)
        if mode == "async":
            req.async_(op, resume=resumed)
            return
        if mode == "await":
            # A plain function can't be awaited: in_thread() makes it an op.
            result = await (op if isinstance(op, Op) else in_thread(op))
        else:
            result = await req.call(op)
        journal.add(req.call_id, "after await", result)
        await req.reply(500, "Resumed")

    @routes.resume
    async def resumed(req: RequestContext) -> None:
        journal.add(req.call_id, "resume", (req.result, req.error))
        await req.reply(500, "Resumed")

    @routes.failure
    async def failed(req: FailureContext) -> None:
        journal.add(req.call_id, "failure", req.status)
        await req.reply(480, f"Failure Route Saw {req.status}")

    return routes


def ops_started(harness: Harness, kind: str, calls: list[Call], before: Resources) -> bool:
    """Whether the op of `kind` of each of `calls` is running now (none has ended)."""
    n = len(calls)
    if kind == "db":
        assert harness.db is not None
        stats = harness.db.statistics()
        return (stats.readers_busy, stats.readers_waiting) == (
            min(n, READERS),
            max(0, n - READERS),
        ) and busy_threads()["triosip db reader"] == min(n, READERS)
    if kind == "pg":
        assert harness.db is not None
        stats = harness.db.statistics()
        return (stats.readers_busy, stats.readers_waiting) == (min(n, READERS), max(0, n - READERS))
    if kind in ("rest", "rest-half"):
        assert harness.http is not None
        return harness.http.hanging == n
    if kind == "exec":
        return len(child_pids() - before.children) == n
    if kind == "exec-shell":
        return all(pids_written(pid_file(str(harness.tmp_path), c.call_id)) for c in calls)
    if kind in ("thread", "thread-held"):
        return _worker_threads() == n
    return True


# How long a test lets ops run once `ops_started` says they are, before it cancels them: a
# query's thread named is about to start its statement, not yet running it, and a cancel
# before the statement starts needs no interrupt.
SETTLE = 0.02


def op_processes(harness: Harness, kind: str, calls: list[Call], before: Resources) -> list[int]:
    """The processes the exec ops of `calls` started (the shells' grandchildren too)."""
    if kind == "exec":
        return sorted(child_pids() - before.children)
    if kind == "exec-shell":
        return [
            pid for c in calls for pid in pids_written(pid_file(str(harness.tmp_path), c.call_id))
        ]
    return []


async def assert_nothing_left(
    harness: Harness, before: Resources, *, processes: list[int], cancelled_rests: int
) -> None:
    """Promise 2 of docs/cancellation.md, once the transactions have ended: no task, thread,
    process or fd they started remains, the DB pool is whole, the REST pool has nothing
    half-used, and both still serve a next request."""
    await harness.transactions_ended()
    http, db, rest = harness.http, harness.db, harness.rest
    if http is not None:
        # The cancelled requests' connections were closed by the client, not left open.
        await wait_until(lambda: http.hangs_closed_by_client == cancelled_rests)
        # The server's handler, having seen the close, still has its own close to finish
        # (trio.serve_tcp's wrapper closes the stream again): let it end before counting
        # tasks. A client that closes at once, without awaiting, would otherwise find it.
        await trio.testing.wait_all_tasks_blocked()
    left = Resources.now().left_since(before)
    assert left == {}, f"left behind: {left}"
    for pid in processes:
        assert not running(pid), f"process {pid} still runs"
        assert group_running(pid) == [], f"process group {pid} still runs"
    if db is not None:
        assert harness.db_pool_whole(READERS), db.statistics()
        assert await db.query("SELECT 1 AS one") == [{"one": 1}]
        if db.url.startswith("postgresql://"):
            # Cancelled on the server, not only abandoned by the pool.
            assert await postgres.running(db, PG_MARKER) == 0
    if rest is not None and http is not None:
        stats = rest.statistics()
        assert stats.requests_in_flight == 0, stats
        assert stats.requests_cancelled == cancelled_rests, stats
        for _ in range(2):  # a new connection, then the same one from the pool
            response = await rest.get(f"{http.url}/ok")
            assert (response.status, response.json()) == (200, {"ok": True})


def still_running(harness: Harness, kind: str, before: Resources) -> int:
    """How many ops of `kind` are running now (0 once every one was cleaned up)."""
    if kind in ("db", "pg"):
        assert harness.db is not None
        return harness.db.statistics().readers_busy
    if kind in ("rest", "rest-half"):
        assert harness.rest is not None
        return harness.rest.statistics().requests_in_flight
    if kind == "exec":
        return len(child_pids() - before.children)
    if kind == "exec-shell":
        return sum(
            running(pid) for path in harness.tmp_path.glob("*.pids") for pid in pids_written(path)
        )
    if kind == "thread":
        return _worker_threads()
    return 0


def _worker_threads() -> int:
    """How many threads run a plain function for an op (``in_thread``) now."""
    return sum(n for name, n in busy_threads().items() if name.startswith("triosip thread"))
