"""One line of the drill: one call through a proxy running the routes file, with one fault
injected, and what came of it (`Observed`).

The proxy starts through `serve_triosip` (as ``triosip run`` starts it) on a UDP socket
of 127.0.0.1; the caller and the callee are `UdpPeer`s; the database is a real one
(``--db``, else a fresh sqlite file).

How an op is made to pend or fail: for real where the drill owns what the op talks to —
a REST op to the drill's HTTP server (``@http``) waits on a server that never answers, or
is refused by a closed port; an exec op of the drill's program (``@program``) runs a
program that sleeps a minute, or one that does not exist — so that the op's own
cancellation (the connection closed, the process group killed and reaped) is what the
leak checks see. Any other op (a query, whose SQL the drill can't slow down; a plain
function; a sleep) pends or fails at its boundary, through `triosip.ops.op_faults`, in
its own task, where the fr timer, a CANCEL or its own timeout cancel it as they would its
work.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from triosip.drill._faults import Fault, OpMode
from triosip.drill._journal import Journal, instrument
from triosip.drill._stall import watching
from triosip.ops import OpFailed, op_faults, open_database, open_rest_client
from triosip.script import ScriptEnvironment, load_routes
from triosip.sip import Request, Response
from triosip.testing.callee import serve_callee
from triosip.testing.http import HttpAnswer, HttpRequest, start_http_server
from triosip.testing.leaks import Resources, busy_threads, child_pids, task_names, wait_until
from triosip.testing.proxy import open_udp_peer, start_proxy
from triosip.transaction import TimerConfig
from triosip.transport import Address

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

    from triosip.ops import Op
    from triosip.script.api import Routes
    from triosip.testing.proxy import RunningProxy, UdpPeer

# Short RFC 3261 timers, so that a transaction ends soon after its call: a CANCEL's server
# transaction lasts 64*T1 after its 200 (Timer J), an INVITE's T4 after its ACK (Timer I).
DRILL_TIMERS = TimerConfig(t1=0.004, t2=0.016, t4=0.004)

# How long the drill waits for a call's transactions to end once it was answered.
SETTLE_LIMIT = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DrillSettings:
    """How the drill runs each fault.

    Attributes:
        short_fr: the fr_timeout (and fr_inv_timeout) of the faults that reach it, seconds.
        long_fr: the fr_timeout of the others: a call must be answered before it.
        stall: the longest task step allowed, seconds; longer is a blocked proxy.
        db_url: the database behind ``req.db``.
        work: a folder for the drill's program stand-in.
    """

    short_fr: float
    long_fr: float
    stall: float
    db_url: str
    work: Path


@dataclass
class Observed:
    """What one call did under one fault."""

    fault: Fault
    journal: Journal = field(default_factory=Journal)
    ops: list[str] = field(default_factory=list)
    callee_reached: bool = False
    cancelled_at: float | None = None
    cancel_sent: bool = False
    sent_at: float = 0.0
    fr: float = 0.0
    finals: list[int] = field(default_factory=list)
    unended: list[str] = field(default_factory=list)
    left: dict[str, Any] = field(default_factory=dict)
    stall: float = 0.0
    stalled_task: str = ""
    pools: list[str] = field(default_factory=list)


async def drill_fault(
    path: Path, defines: Mapping[str, str], fault: Fault, settings: DrillSettings
) -> Observed:
    """Run one call through `path`'s routes with `fault` injected, and observe it.

    Args:
        path: the routes file (loaded afresh for this call).
        defines: the script parameters; ``@callee``, ``@http`` and ``@program`` stand for
            the drill's own callee, HTTP server and program.
        fault: what to inject.
        settings: the drill's timers and resources.

    Raises:
        RoutesLoadError: the file does not load with these defines.
    """
    observed = Observed(fault)
    before = Resources.now()
    async with trio.open_nursery() as nursery:
        async with open_udp_peer() as caller, open_udp_peer() as callee:
            http = await start_http_server(nursery, {"/drill": _destination(callee)})
            with trio.socket.socket() as closed:  # bound, never listening: refuses
                await closed.bind(("127.0.0.1", 0))
                refused = f"http://127.0.0.1:{closed.getsockname()[1]}"
                stand_ins = _stand_ins(fault.ops, callee, http.url, refused, settings.work)
                params = {name: stand_ins.get(value, value) for name, value in defines.items()}
                routes = load_routes(path, params)
                instrument(routes, observed.journal)
                nursery.start_soon(serve_callee, callee, fault.answer, name="drill callee")
                real = tuple(v for k, v in stand_ins.items() if k != "@callee")
                inject = functools.partial(_inject, fault.ops, observed, real)
                async with _environment(settings.db_url) as environment:
                    with op_faults(inject):
                        await _call(
                            nursery, routes, environment, caller, callee, observed, settings
                        )
                observed.pools = _pools_left(environment)
        nursery.cancel_scope.cancel()
    # Everything the drill opened is closed now: what differs was left by the routes (a
    # process being reaped, a thread returning, may take a moment).
    with trio.move_on_after(SETTLE_LIMIT):
        await wait_until(lambda: not Resources.now().left_since(before), poll=0.01)
    after = Resources.now().left_since(before)
    for what, items in after.items():
        observed.left.setdefault(what, items)
    return observed


async def _call(
    nursery: trio.Nursery,
    routes: Routes,
    environment: ScriptEnvironment,
    caller: UdpPeer,
    callee: UdpPeer,
    observed: Observed,
    settings: DrillSettings,
) -> None:
    fault = observed.fault
    fr = settings.short_fr if fault.short_fr else settings.long_fr
    observed.fr = fr
    tasks_before = set(nursery.child_tasks)
    running = await start_proxy(
        nursery,
        routes,
        fr_timeout=fr,
        fr_inv_timeout=fr,
        timers=DRILL_TIMERS,
        listen=[Address("udp", "127.0.0.1", 0)],
        environment=environment,
    )
    [proxy_task] = set(nursery.child_tasks) - tasks_before
    proxy_tasks = task_names(proxy_task)
    threads, children = busy_threads(), child_pids()
    invite = caller.request(
        "INVITE", f"sip:drill@{callee.address.host_port}", call_id=secrets.token_hex(8)
    )
    with watching() as watch:
        observed.sent_at = trio.current_time()
        await caller.send(invite, running.udp)
        with trio.move_on_after(fr + 3.0):
            if fault.cancel:
                await _cancel_when_pending(caller, callee, invite, running, observed)
            response = await _final(caller, invite)
            if response.status >= 300:
                await caller.send(caller.ack(invite, response), running.udp)
        await _settle(running)
        observed.stall, observed.stalled_task = watch.longest, watch.task
    observed.callee_reached = any(
        isinstance(m, Request) and m.method == "INVITE" for m in callee.messages
    )
    observed.finals = [
        m.status
        for m in caller.messages
        if isinstance(m, Response) and m.cseq.method == "INVITE" and m.status >= 200
    ]
    if not _ended(running):
        active = running.proxy.transactions.statistics().server_active
        observed.unended = [f"{active} server transactions"]
    # Launched work outlives its transaction by design (and ends with the proxy).
    tasks = task_names(proxy_task)
    for launched in running.running.environment.launched_tasks():
        tasks -= task_names(launched)
    left = Resources(tasks, busy_threads(), child_pids(), {})
    observed.left = left.left_since(Resources(proxy_tasks, threads, children, {}))
    running.stop()


async def _cancel_when_pending(
    caller: UdpPeer, callee: UdpPeer, invite: Request, running: RunningProxy, observed: Observed
) -> None:
    """CANCEL the INVITE once work is pending: an op, or the callee ringing; not if the
    call was answered first."""

    def pending() -> bool:
        return bool(observed.ops) or any(
            isinstance(m, Request) and m.method == "INVITE" for m in callee.messages
        )

    def answered() -> bool:
        return any(
            isinstance(m, Response) and m.status >= 200 and m.cseq.method == "INVITE"
            for m in caller.messages
        )

    await wait_until(lambda: pending() or answered())
    if answered():
        return
    observed.cancelled_at = trio.current_time()
    observed.cancel_sent = True
    await caller.send(caller.cancel(invite), running.udp)


async def _final(caller: UdpPeer, invite: Request) -> Response:
    while True:
        response = await caller.receive_response(method="INVITE")
        if response.call_id == invite.call_id:
            return response


async def _settle(running: RunningProxy) -> None:
    """Wait for the call's transactions to end. A branch answered with a failure lingers
    Timer D (32 s on UDP, RFC 3261 §17.1.1.2) to absorb retransmissions: under the drill's
    `MockClock` that time is jumped over rather than waited for."""
    clock = trio.lowlevel.current_clock()
    for _ in range(3):
        with trio.move_on_after(SETTLE_LIMIT / 4):
            await wait_until(lambda: _ended(running))
        if _ended(running) or not isinstance(clock, trio.testing.MockClock):
            return
        clock.jump(DRILL_TIMERS.timer_d(reliable=False) + 1.0)


def _ended(running: RunningProxy) -> bool:
    proxy = running.proxy
    return proxy.transactions.statistics().server_active == 0 and not proxy.live


async def _inject(mode: OpMode, observed: Observed, real: tuple[str, ...], op: Op[Any]) -> None:
    if op.kind in ("rest", "exec") and any(target in op.description for target in real):
        # It talks to a stand-in, which pends or fails for real (`_stand_ins`).
        observed.ops.append(f"{op.kind} (real)")
        return
    observed.ops.append(op.kind)
    if mode is OpMode.PEND:
        await trio.sleep_forever()
    elif mode is OpMode.FAIL:
        raise OpFailed(op.kind, op.description, "injected by triosip check")


@contextlib.asynccontextmanager
async def _environment(db_url: str) -> AsyncIterator[ScriptEnvironment]:
    async with (
        open_database(db_url, readers=2) as db,
        open_rest_client(max_connections=4) as rest,
    ):
        yield ScriptEnvironment(db=db, rest=rest, max_launched=10)


def _pools_left(environment: ScriptEnvironment) -> list[str]:
    """The pooled resources a call left in use (checked before the pools close)."""
    problems = []
    rest, db = environment.rest, environment.db
    if rest is not None and rest.statistics().requests_in_flight:
        problems.append(f"{rest.statistics().requests_in_flight} REST requests in flight")
    if db is not None and db.statistics().readers_busy:
        problems.append(f"{db.statistics().readers_busy} DB connections busy")
    return problems


def _destination(callee: UdpPeer) -> Any:
    def answer(_request: HttpRequest) -> HttpAnswer:
        return HttpAnswer.json(200, {"destination": callee.destination})

    return answer


def _stand_ins(
    mode: OpMode, callee: UdpPeer, http: str, refused: str, work: Path
) -> dict[str, str]:
    """What ``@callee``, ``@http`` and ``@program`` stand for under ops of `mode`: the
    callee; the HTTP server's answer (``/drill``), its ``/hang`` (it never answers) or a
    closed port; a program that prints the callee's destination, sleeps a minute, or
    does not exist."""
    http_url = {OpMode.RUN: f"{http}/drill", OpMode.PEND: f"{http}/hang", OpMode.FAIL: refused}
    program = work / f"drill-program-{mode.value}"
    body = {OpMode.RUN: f"echo {callee.destination}", OpMode.PEND: "exec sleep 60"}
    if mode in body:
        program.write_text(f"#!/bin/sh\n{body[mode]}\n")
        os.chmod(program, 0o755)
    return {"@callee": callee.destination, "@http": http_url[mode], "@program": str(program)}
