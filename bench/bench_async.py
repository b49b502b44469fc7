"""Async ops under load: sipp calls through triosip where every INVITE waits on an op.

Issue 4's speed section, in four parts (``--parts``, all by default):

1. **rates**: the highest clean call rate (bench_calls.py's verdict: no failed call,
   < 1% retransmissions, rate kept, on the majority of the runs) of sipp's uac -> proxy ->
   sipp's uas, with bench/routes/wait_then_relay.py holding each new INVITE for
   ``--delay`` (50 ms) before relaying it, one mode per proxy (``--modes``):

   - ``none``: routes/default.py, no wait (the baseline);
   - ``sleep``: ``req.async_(sleep(0.05), resume=...)``;
   - ``rest``: ``req.async_(req.rest.get(url), resume=...)`` to a local HTTP service
     (started here, in its own process) that answers each GET after 50 ms;
   - ``block``: ``time.sleep(0.05)`` called in the route, as a worker without async
     would: the whole proxy stops meanwhile, so expect about 1 / 0.05 = 20 calls/s at
     most (its rates are ``--block-rates``);
   - ``kamailio`` and ``kamailio-async``: Kamailio with bench/kamailio.cfg and
     bench/kamailio-async.cfg (``async_ms_route`` 50 ms), for the same ratio in C
     (their rates are ``--kamailio-rates``);
   - ``kamailio-rest``: bench/kamailio-rest.cfg, each INVITE's GET to the same 50 ms
     service made by http_client_query in an async_task_route worker (its rates are
     ``--kamailio-rest-rates``);
   - ``rest-before``: ``rest``, run by another triosip (``--triosip-before``, e.g. the
     commit before a change, through PYTHONPATH), for a before/after in the same run.

   Each wait mode's rate is also given as a share of its baseline's (triosip: ``none``;
   Kamailio: ``kamailio``).
2. **machinery**: the CPU the async machinery costs per call: proxy CPU ms per call at one
   rate with ``async_`` + resume of a zero-latency op (``sleep(0)``) against none
   (routes/default.py). Each run has a fresh proxy and the two alternate, since a
   proxy's cost per call grows with what earlier runs left it (its garbage collector
   walks the transactions that linger for 64*T1 after each call).
3. **restcpu**: the CPU one REST request costs inside the proxy: proxy CPU ms per call at
   ``--machinery-rate`` with ``async_`` + resume of a 50 ms sleep against the same with
   ``--restcpu-requests`` GETs in a row to the HTTP service (answering at once; the last
   GET through ``async_``), and with ``rest-before``'s proxy when ``--triosip-before`` is
   given; fresh proxies alternating, ``--machinery-runs`` each. The difference of the
   medians, divided by the GETs per call, is a REST request's own cost (several per call
   lift it above the noise of a shared machine).
4. **memory**: the proxy's RSS (/proc/PID/status) with ``--memory-transactions`` INVITE
   transactions each waiting on a ``--memory-wait`` (30 s) sleep op, sent by a raw UDP
   client here (no sipp); then each is CANCELled, and the time until every 487 came back
   is the time to cancel them all.

Everything else comes from bench_calls.py (sipp, the proxies, CPU from /proc); see
bench/README.md. Usage, from the repository root::

    .venv/bin/python bench/bench_async.py                       # everything (~30 minutes)
    .venv/bin/python bench/bench_async.py --parts rates --modes none,sleep,rest \\
        --rates 200,400,600,800,1000 --duration 10 --runs 2
    .venv/bin/python bench/bench_async.py --parts machinery --machinery-rate 300
    .venv/bin/python bench/bench_async.py --parts memory --memory-transactions 10000
    git archive HEAD~1 triosip routes | tar -x -C /tmp/before
    .venv/bin/python bench/bench_async.py --parts rates,restcpu --modes none,rest,rest-before \
        --triosip-before "env PYTHONPATH=/tmp/before {python} -P -m triosip run"
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import bench_calls as harness
import trio

from triosip.ops import open_database
from triosip.sip import ParseError, Response, parse_message
from triosip.testing.postgres import PostgresServer
from triosip.testing.sipp import find_free_port, stop_process

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WAIT_ROUTES = BENCH / "routes" / "wait_then_relay.py"
DEFAULT_ROUTES = ROOT / "routes" / "default.py"
MODES = (
    "none",
    "sleep",
    "rest",
    "rest-before",
    "block",
    "sqlite",
    "postgres",
    "kamailio",
    "kamailio-async",
    "kamailio-rest",
)
PARTS = ("rates", "machinery", "restcpu", "memory")
WHAT = {
    "none": "nothing (routes/default.py)",
    "sleep": "async_(sleep(delay)) + resume",
    "rest": "async_(rest.get(url)) + resume, the server answering after delay",
    "rest-before": "the same as rest, in the --triosip-before proxy",
    "block": "time.sleep(delay) in the route (no async)",
    "sqlite": "async_(db.query(lookup)) + resume, on sqlite",
    "postgres": "async_(db.query(lookup)) + resume, on PostgreSQL (local, throwaway)",
    "kamailio": "nothing (bench/kamailio.cfg)",
    "kamailio-async": "async_ms_route, delay (bench/kamailio-async.cfg)",
    "kamailio-rest": "async_task_route + http_client_query(url), the server answering after "
    "delay (bench/kamailio-rest.cfg)",
}
BASELINE = {
    "sleep": "none",
    "rest": "none",
    "rest-before": "none",
    "block": "none",
    "sqlite": "none",
    "postgres": "none",
    "kamailio-async": "kamailio",
    "kamailio-rest": "kamailio",
}
# The response of the HTTP service: a small JSON body, the connection kept alive.
HTTP_RESPONSE = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"wait":50}'
)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_http is not None:
        trio.run(serve_http, args.serve_http)
        return 0
    if shutil.which("sipp") is None:
        print("sipp not found: install the Debian package 'sip-tester'")
        return 1
    harness.print_header(
        harness.parse_args(
            [
                *("--kamailio", args.kamailio, "--rates", ",".join(map(str, args.rates))),
                *("--duration", str(args.duration), "--runs", str(args.runs)),
            ]
        )
    )
    print(
        f"parts {args.parts}; modes {args.modes}; delay {args.delay:g} s; "
        f"rates {args.rates}, block {args.block_rates}, kamailio {args.kamailio_rates}; "
        f"{args.duration:g} s per run, {args.runs} runs per rate",
        flush=True,
    )
    report = trio.run(bench, args)
    print_summary(args, report)
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=1) + "\n")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="sipp calls through triosip where every INVITE waits on an async op.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--parts", default=",".join(PARTS), help=f"among {', '.join(PARTS)}")
    parser.add_argument(
        "--modes",
        default=",".join(m for m in MODES if m != "rest-before"),
        help=f"among {', '.join(MODES)} (rest-before needs --triosip-before)",
    )
    parser.add_argument("--delay", type=float, default=0.05, help="seconds each INVITE waits")
    parser.add_argument(
        "--rates",
        default="100,200,300,400,500,700,1000,1500,2000,3000",
        help="calls/s for none, sleep and rest, in this order (a target stops at its "
        "first rate that is not clean)",
    )
    parser.add_argument("--block-rates", default="5,10,15,20,30", help="calls/s for block")
    parser.add_argument(
        "--kamailio-rates",
        default="1000,2000,3000,4000,5000,6000,8000",
        help="calls/s for kamailio and kamailio-async",
    )
    parser.add_argument(
        "--kamailio-rest-rates", default="100,200,300,400", help="calls/s for kamailio-rest"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of calls per run")
    parser.add_argument("--runs", type=int, default=2, help="runs per rate (a 3rd breaks a tie)")
    parser.add_argument(
        "--keep-going", action="store_true", help="go on past a rate that is not clean"
    )
    parser.add_argument(
        "--machinery-rate", type=int, default=300, help="calls/s of the machinery runs"
    )
    parser.add_argument(
        "--machinery-duration", type=float, default=10.0, help="seconds per machinery run"
    )
    parser.add_argument(
        "--machinery-runs", type=int, default=3, help="runs of each of the two machinery modes"
    )
    parser.add_argument(
        "--restcpu-requests", type=int, default=5, help="GETs per INVITE in the restcpu part"
    )
    parser.add_argument(
        "--memory-transactions",
        type=int,
        default=10000,
        help="INVITE transactions left waiting at once for the memory figure",
    )
    parser.add_argument(
        "--memory-wait", type=float, default=30.0, help="seconds the memory test's op sleeps"
    )
    parser.add_argument(
        "--memory-send-rate",
        type=int,
        default=2000,
        help="INVITEs (and then CANCELs) per second sent by the memory test's client",
    )
    parser.add_argument("--kamailio", default="kamailio", help="the kamailio executable")
    parser.add_argument(
        "--triosip",
        default="{python} -m triosip run",
        help="how to start triosip ({python} is this interpreter); the bench adds the "
        "routes, --listen, --define... to it",
    )
    parser.add_argument(
        "--triosip-before",
        help="how to start the triosip of the rest-before mode and of restcpu's third column "
        "(as --triosip), e.g. an older commit through PYTHONPATH (with python -P, or the "
        "checkout in the current directory comes first)",
    )
    parser.add_argument(
        "--startup-timeout", type=float, default=10.0, help="seconds a proxy gets to bind"
    )
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument(
        "--serve-http",
        type=float,
        metavar="DELAY",
        help=argparse.SUPPRESS,  # internal: be the HTTP service (answer after DELAY s)
    )
    args = parser.parse_args(argv)
    args.parts = _choices(parser, "--parts", args.parts, PARTS)
    args.modes = _choices(parser, "--modes", args.modes, MODES)
    for name in ("rates", "block_rates", "kamailio_rates", "kamailio_rest_rates"):
        setattr(args, name, [int(r) for r in getattr(args, name).split(",") if r.strip()])
    if "rest-before" in args.modes and not args.triosip_before:
        parser.error("the rest-before mode needs --triosip-before")
    if args.runs < 1 or args.machinery_runs < 1 or args.memory_transactions < 1:
        parser.error("--runs, --machinery-runs and --memory-transactions must be >= 1")
    return args


def _choices(
    parser: argparse.ArgumentParser, option: str, text: str, allowed: tuple[str, ...]
) -> list[str]:
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        parser.error(f"{option}: unknown {unknown}; choose among {', '.join(allowed)}")
    return chosen


# --- what the bench reports ------------------------------------------------------------


@dataclass
class ModeResult:
    mode: str
    best: int | None  # None: not available
    runs: list[dict[str, object]] = field(default_factory=list)
    note: str = ""

    def at_best(self, key: str) -> float | None:
        values = [
            float(v) for r in self.runs if r["rate"] == self.best and (v := r.get(key)) is not None
        ]
        return statistics.median(values) if values else None


@dataclass
class Machinery:
    rate: int
    none_cpu: list[float] = field(default_factory=list)
    async_cpu: list[float] = field(default_factory=list)
    clean: list[bool] = field(default_factory=list)


@dataclass
class RestCpu:
    rate: int
    requests: int  # GETs per call
    cpu: dict[str, list[float]] = field(default_factory=dict)  # by mode: proxy ms per call
    clean: list[bool] = field(default_factory=list)


@dataclass
class Memory:
    transactions: int
    wait: float
    rss_idle_kib: int = 0
    rss_waiting_kib: int = 0
    rss_after_kib: int = 0
    waiting: int = 0  # INVITEs answered 100 Trying and not ended before the measure
    early_finals: int = 0  # final responses before the CANCELs: not waiting on the op
    accept_cpu_ms: float = 0.0  # proxy CPU per INVITE taken
    cancelled_487: int = 0
    cancel_seconds: float | None = None
    note: str = ""


@dataclass
class Report:
    modes: list[ModeResult] = field(default_factory=list)
    machinery: Machinery | None = None
    restcpu: RestCpu | None = None
    memory: Memory | None = None


async def bench(args: argparse.Namespace) -> Report:
    report = Report()
    mi_off = _mi_off_option(args)
    if "rates" in args.parts:
        for mode in args.modes:
            report.modes.append(await bench_mode(args, mode, mi_off))
    if "machinery" in args.parts:
        report.machinery = await bench_machinery(args, mi_off)
    if "restcpu" in args.parts:
        report.restcpu = await bench_restcpu(args, mi_off)
    if "memory" in args.parts:
        report.memory = await bench_memory(args, mi_off)
    return report


# --- part 1: clean rates -------------------------------------------------------------------


async def bench_mode(args: argparse.Namespace, mode: str, mi_off: list[str]) -> ModeResult:
    print(f"\n### {mode}: each new INVITE waits on {WHAT[mode].replace('delay', _ms(args))}\n")
    target = "kamailio" if mode.startswith("kamailio") else "triosip"
    rates = {"block": args.block_rates}.get(mode, args.rates)
    if target == "kamailio":
        rates = args.kamailio_rest_rates if mode == "kamailio-rest" else args.kamailio_rates
    with_rest = mode.startswith("rest") or mode == "kamailio-rest"
    async with (
        _http_service(args.delay if with_rest else None) as rest_url,
        _subscribers(mode) as db_url,
    ):
        harness_args = _harness_args(
            args,
            rates=rates,
            duration=args.duration,
            runs=args.runs,
            triosip_cmd=_triosip_command(
                args, mode, mi_off, rest_url=rest_url, extra=["--db", db_url] if db_url else []
            ),
            kamailio_cfg=str(BENCH / f"{mode}.cfg") if target == "kamailio" else None,
            kamailio_defines=[f'REST_URL="{rest_url}"'] if mode == "kamailio-rest" else [],
            # sipp logs setup times in batches of rtt_freq calls: block mode makes few.
            rtt_freq=10 if mode == "block" else 100,
        )
        uas_port = find_free_port()
        try:
            async with harness.open_proxy(target, harness_args, uas_port) as proxy:
                runs, best = await harness.bench_target(target, harness_args, uas_port, proxy)
        except harness.ProxyUnavailable as exc:
            print(f"{mode} not available: {exc}")
            return ModeResult(mode, None, note=str(exc).splitlines()[0])
    rows = [{**asdict(r), "clean": r.clean} for r in runs]
    return ModeResult(mode, best, rows)


@asynccontextmanager
async def _subscribers(mode: str) -> AsyncIterator[str | None]:
    """For the lookup modes, a database with sipp's caller in its subscribers table (sqlite
    in a temporary folder, or a throwaway PostgreSQL server), stopped at the end."""
    if mode not in ("sqlite", "postgres"):
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="triosip-bench-"))
    server = None
    try:
        if mode == "postgres":
            server = PostgresServer(folder)
            await trio.to_thread.run_sync(server.start)
            url = server.url
        else:
            url = f"sqlite:///{folder / 'subscribers.db'}"
        async with open_database(url, readers=1) as db:
            await db.execute(
                "CREATE TABLE subscribers (username text PRIMARY KEY, setid int NOT NULL)"
            )
            await db.execute("INSERT INTO subscribers VALUES ('sipp', 3)")
        yield url
    finally:
        if server is not None:
            await trio.to_thread.run_sync(server.stop, "immediate")
        shutil.rmtree(folder, ignore_errors=True)


def _ms(args: argparse.Namespace) -> str:
    return f"{args.delay * 1000:g} ms"


# --- part 2: the machinery's own cost ------------------------------------------------------


async def bench_machinery(args: argparse.Namespace, mi_off: list[str]) -> Machinery:
    rate = args.machinery_rate
    print(
        f"\n### machinery: proxy CPU per call at {rate} calls/s, async_ + resume of a "
        "zero-latency op (sleep(0)) against none; a fresh proxy per run\n"
    )
    result = Machinery(rate)
    print("| run | mode | ok | failed | retrans | setup p50 ms | proxy CPU ms/call | clean |")
    print("|---:|---|---:|---:|---:|---:|---:|:---:|")
    for number in range(1, args.machinery_runs + 1):
        for mode in ("none", "sleep0"):
            command = _triosip_command(args, mode, mi_off)
            harness_args = _harness_args(
                args, rates=[rate], duration=args.machinery_duration, runs=1, triosip_cmd=command
            )
            uas_port = find_free_port()
            try:
                async with harness.open_proxy("triosip", harness_args, uas_port) as proxy:
                    run = await harness.one_run("triosip", harness_args, rate, 1, uas_port, proxy)
            except harness.ProxyUnavailable as exc:
                print(f"triosip not available: {exc}")
                return result
            cpu = run.proxy_cpu_per_1000 or 0.0
            (result.none_cpu if mode == "none" else result.async_cpu).append(cpu)
            result.clean.append(run.clean)
            print(
                f"| {number} | {mode} | {run.succeeded} | {run.failed} | {run.retransmissions} "
                f"| {run.setup_p50_ms} | {cpu:.3f} | {'yes' if run.clean else 'no'} |",
                flush=True,
            )
            await trio.sleep(1.0)
    return result


# --- part 3: the CPU of one REST request -------------------------------------------------


async def bench_restcpu(args: argparse.Namespace, mi_off: list[str]) -> RestCpu:
    rate = args.machinery_rate
    modes = ["sleep", "rest"] + (["rest-before"] if args.triosip_before else [])
    print(
        f"\n### restcpu: proxy CPU per call at {rate} calls/s, each INVITE waiting on "
        f"a sleep ({_ms(args)}) / {args.restcpu_requests} GETs in a row to a service that "
        f"answers at once ({' / '.join(modes[1:])}); fresh proxies, alternating\n"
    )
    result = RestCpu(rate, args.restcpu_requests, {mode: [] for mode in modes})
    print("| run | mode | ok | failed | retrans | setup p50 ms | proxy CPU ms/call | clean |")
    print("|---:|---|---:|---:|---:|---:|---:|:---:|")
    count = args.restcpu_requests
    async with _http_service(0.0) as rest_url:
        for number in range(1, args.machinery_runs + 1):
            for mode in modes:
                extra = [] if mode == "sleep" else ["--define", f"rest_count={count}"]
                command = _triosip_command(args, mode, mi_off, rest_url=rest_url, extra=extra)
                harness_args = _harness_args(
                    args,
                    rates=[rate],
                    duration=args.machinery_duration,
                    runs=1,
                    triosip_cmd=command,
                )
                uas_port = find_free_port()
                try:
                    async with harness.open_proxy("triosip", harness_args, uas_port) as proxy:
                        run = await harness.one_run(
                            "triosip", harness_args, rate, 1, uas_port, proxy
                        )
                except harness.ProxyUnavailable as exc:
                    print(f"{mode} not available: {exc}")
                    return result
                cpu = run.proxy_cpu_per_1000 or 0.0
                result.cpu[mode].append(cpu)
                result.clean.append(run.clean)
                print(
                    f"| {number} | {mode} | {run.succeeded} | {run.failed} "
                    f"| {run.retransmissions} | {run.setup_p50_ms} | {cpu:.3f} "
                    f"| {'yes' if run.clean else 'no'} |",
                    flush=True,
                )
                await trio.sleep(1.0)
    return result


# --- part 4: memory of transactions waiting on ops -----------------------------------------


async def bench_memory(args: argparse.Namespace, mi_off: list[str]) -> Memory:
    count = args.memory_transactions
    result = Memory(count, args.memory_wait)
    print(
        f"\n### memory: {count} INVITE transactions each waiting on sleep({args.memory_wait:g})"
        f", sent at {args.memory_send_rate}/s by a raw UDP client, then CANCELled\n",
        flush=True,
    )
    uas_port = find_free_port()  # nothing listens: no INVITE gets that far
    command = _triosip_command(
        args,
        "sleep",
        mi_off,
        delay=args.memory_wait,
        # The transaction's fr timer bounds the request route and its ops: keep it out of
        # the way of the wait.
        extra=["--fr-timeout", f"{args.memory_wait * 2 + 30:g}"],
    )
    harness_args = _harness_args(args, rates=[1], duration=1, runs=1, triosip_cmd=command)
    try:
        async with harness.open_proxy("triosip", harness_args, uas_port) as proxy:
            await trio.sleep(1.0)
            result.rss_idle_kib = rss_kib(proxy.pid)
            async with open_raw_client(proxy.port) as client:
                cpu_before = harness.tree_cpu(proxy.pid)
                client.expected = count
                await client.send_requests(
                    [client.invite(n, uas_port) for n in range(count)], args.memory_send_rate
                )
                with trio.move_on_after(10.0):
                    await client.all_trying.wait()
                await trio.sleep(1.0)
                result.accept_cpu_ms = (harness.tree_cpu(proxy.pid) - cpu_before) / count * 1000
                result.rss_waiting_kib = rss_kib(proxy.pid)
                result.early_finals = len(client.finals)
                result.waiting = len(client.trying - client.finals - client.terminated)
                client.expected = result.waiting
                if len(client.terminated) >= client.expected:
                    client.all_terminated.set()
                started = time.monotonic()
                await client.send_requests(
                    [client.cancel(n, uas_port) for n in range(count)], args.memory_send_rate
                )
                with trio.move_on_after(max(30.0, 3 * count / args.memory_send_rate)):
                    await client.all_terminated.wait()
                if client.terminated:
                    result.cancel_seconds = client.last_final_at - started
                result.cancelled_487 = len(client.terminated)
                await trio.sleep(1.0)
                result.rss_after_kib = rss_kib(proxy.pid)
    except harness.ProxyUnavailable as exc:
        print(f"triosip not available: {exc}")
        result.note = str(exc).splitlines()[0]
    return result


def rss_kib(pid: int) -> int:
    """The resident set size of a process, in KiB (proc(5): VmRSS)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


class RawClient:
    """A UAC on a plain UDP socket: INVITEs, their CANCELs, the ACKs of the 487s."""

    def __init__(self, sock: trio.socket.SocketType, destination: tuple[str, int]) -> None:
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.destination = destination
        # The numbers of the calls that got a 100 Trying, another final than 487, a 487
        # (sets: a final the client ACKs late comes again, Timer G).
        self.trying: set[int] = set()
        self.finals: set[int] = set()
        self.terminated: set[int] = set()
        self.last_final_at = 0.0
        self.uas_port = 0  # the port the Request-URIs name
        self.expected = 0  # how many 100s, then 487s, to wait for
        self.all_trying = trio.Event()
        self.all_terminated = trio.Event()

    def _headers(self, n: int, uas_port: int, method: str, to_tag: str | None = None) -> str:
        to = f"<sip:service@127.0.0.1:{uas_port}>" + (f";tag={to_tag}" if to_tag else "")
        return (
            f"{method} sip:service@127.0.0.1:{uas_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-bench-{n}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:bench@127.0.0.1:{self.port}>;tag=bench{n}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: bench-async-{n}@127.0.0.1\r\n"
            f"CSeq: 1 {method}\r\n"
        )

    def invite(self, n: int, uas_port: int) -> bytes:
        self.uas_port = uas_port
        return (
            self._headers(n, uas_port, "INVITE")
            + f"Contact: <sip:bench@127.0.0.1:{self.port}>\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    def cancel(self, n: int, uas_port: int) -> bytes:
        # RFC 3261 §9.1: the INVITE's Request-URI, Call-ID, From, To, CSeq number and Via.
        return (self._headers(n, uas_port, "CANCEL") + "Content-Length: 0\r\n\r\n").encode()

    async def send_requests(self, datagrams: list[bytes], rate: int) -> None:
        batch = max(1, rate // 100)  # 100 batches a second
        start = trio.current_time()
        for index in range(0, len(datagrams), batch):
            for data in datagrams[index : index + batch]:
                await self.sock.sendto(data, self.destination)
            await trio.sleep_until(start + (index + batch) / rate)

    async def receive(self) -> None:
        while True:
            data, _ = await self.sock.recvfrom(65535)
            try:
                message = parse_message(data)
            except ParseError:
                continue
            if not isinstance(message, Response) or message.cseq.method != "INVITE":
                continue
            n = int(message.call_id.removeprefix("bench-async-").partition("@")[0])
            if message.status == 100:
                self.trying.add(n)
                if len(self.trying) >= self.expected:
                    self.all_trying.set()
            elif message.status >= 200:
                if message.status == 487:
                    self.terminated.add(n)
                    self.last_final_at = time.monotonic()
                    if len(self.terminated) >= self.expected:
                        self.all_terminated.set()
                else:
                    self.finals.add(n)
                # RFC 3261 §17.1.1.3: the ACK of a non-2xx final, on the INVITE's branch.
                ack = self._headers(n, self.uas_port, "ACK", message.to.tag)
                await self.sock.sendto(
                    (ack + "Content-Length: 0\r\n\r\n").encode(), self.destination
                )


@asynccontextmanager
async def open_raw_client(proxy_port: int):
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with sock:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4 * 1024 * 1024)
        await sock.bind(("127.0.0.1", 0))
        client = RawClient(sock, ("127.0.0.1", proxy_port))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.receive, name="raw client receive")
            yield client
            nursery.cancel_scope.cancel()


# --- the HTTP service of the rest mode -------------------------------------------------------


async def serve_http(delay: float) -> None:
    """Answer every HTTP/1.1 request after `delay` seconds, keeping connections alive;
    print the port first (the bench reads it)."""

    async def handle(stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                buffer = buffer[length:]
                await trio.sleep(delay)
                await stream.send_all(HTTP_RESPONSE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=1024)
    print(listeners[0].socket.getsockname()[1], flush=True)
    await trio.serve_listeners(handle, listeners)


@asynccontextmanager
async def _http_service(delay: float | None):
    """The HTTP service in a process of its own (its CPU is not the proxy's), or None."""
    if delay is None:
        yield None
        return
    process = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--serve-http", str(delay)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(10):
            line = b""
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(64)
                if not chunk:
                    raise RuntimeError("the HTTP service exited before giving its port")
                line += chunk
        url = f"http://127.0.0.1:{int(line)}/wait"
        print(f"HTTP service: {url} (answers after {delay * 1000:g} ms)", flush=True)
        yield url
    finally:
        await stop_process(process, process_group=True, grace=2.0)


# --- commands -------------------------------------------------------------------------------


def _triosip_command(
    args: argparse.Namespace,
    mode: str,
    mi_off: list[str],
    *,
    rest_url: str | None = None,
    delay: float | None = None,
    extra: list[str] | None = None,
) -> str:
    """The --triosip-cmd template of bench_calls.py for one mode ({port}, {uas_port} left)."""
    if mode == "none":
        routes, defines = DEFAULT_ROUTES, []
    else:
        wait, delay = ("sleep", 0.0) if mode == "sleep0" else (mode, delay or args.delay)
        wait = "rest" if mode == "rest-before" else wait
        if mode in ("sqlite", "postgres"):
            wait = "lookup"
        routes = WAIT_ROUTES
        # The op's own timeout must outlast the wait, or a long wait (the memory part)
        # ends in the route's 503 instead of waiting.
        defines = [f"wait={wait}", f"delay={delay:g}", f"op_timeout={max(5.0, 2 * delay):g}"]
        if rest_url:
            defines.append(f"rest_url={rest_url}")
    words = [
        str(routes),
        *mi_off,
        "--listen",
        "udp:127.0.0.1:{port}",
        "--define",
        "downstream=udp:127.0.0.1:{uas_port}",
        # Enough HTTP connections for rate x delay requests at once at every rate tried.
        "--rest-connections",
        "1000",
        *(extra or []),
    ]
    for define in defines:
        words += ["--define", define]
    triosip = args.triosip_before if mode == "rest-before" else args.triosip
    return triosip + " " + shlex.join(words)


def _mi_off_option(args: argparse.Namespace) -> list[str]:
    """``--mi off`` if this triosip has a management interface: two proxies (or a proxy
    and someone else's) must not compete for its default port."""
    command = [*shlex.split(args.triosip.format(python=sys.executable)), "--help"]
    try:
        text = subprocess.run(
            command, capture_output=True, text=True, timeout=30, check=False, cwd=ROOT
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return ["--mi", "off"] if "--mi " in text else []


def _harness_args(
    args: argparse.Namespace,
    *,
    rates: list[int],
    duration: float,
    runs: int,
    triosip_cmd: str,
    kamailio_cfg: str | None = None,
    kamailio_defines: list[str] | None = None,
    rtt_freq: int = 100,
) -> argparse.Namespace:
    argv = [
        "--rtt-freq",
        str(rtt_freq),
        "--rates",
        ",".join(str(r) for r in rates),
        "--duration",
        str(duration),
        "--runs",
        str(runs),
        "--triosip-cmd",
        triosip_cmd,
        "--kamailio",
        args.kamailio,
        "--startup-timeout",
        str(args.startup_timeout),
    ]
    if kamailio_cfg:
        argv += ["--kamailio-cfg", kamailio_cfg]
    for define in kamailio_defines or []:
        argv += ["--kamailio-define", define]
    if args.keep_going:
        argv.append("--keep-going")
    return harness.parse_args(argv)


# --- the summary --------------------------------------------------------------------------


def print_summary(args: argparse.Namespace, report: Report) -> None:
    print("\n## Summary\n")
    if report.modes:
        best = {m.mode: m.best for m in report.modes}
        print(
            "| mode | each new INVITE waits on | highest clean rate | share of its "
            "baseline | setup p50 ms | proxy CPU ms/call |"
        )
        print("|---|---|---:|---:|---:|---:|")
        for m in report.modes:
            if m.best is None:
                print(f"| {m.mode} | {WHAT[m.mode]} | not available: {m.note} ||||")
                continue
            base = best.get(BASELINE.get(m.mode, m.mode))
            share = f"{m.best / base:.0%}" if m.best and base else "—"
            p50 = m.at_best("setup_p50_ms")
            cpu = m.at_best("proxy_cpu_per_1000")
            print(
                f"| {m.mode} | {WHAT[m.mode].replace('delay', _ms(args))} "
                f"| {f'{m.best} calls/s' if m.best else 'none clean'} | {share} "
                f"| {'—' if p50 is None else f'{p50:g}'} | {'—' if cpu is None else f'{cpu:.3f}'} |"
            )
    machinery = report.machinery
    if machinery and machinery.none_cpu and machinery.async_cpu:
        none = statistics.median(machinery.none_cpu)
        with_op = statistics.median(machinery.async_cpu)
        print(
            f"\nMachinery at {machinery.rate} calls/s (medians of {len(machinery.none_cpu)} "
            f"runs each): none {none:.3f} ms/call; async_ + resume of sleep(0) "
            f"{with_op:.3f} ms/call: {with_op - none:+.3f} ms/call"
            + ("" if all(machinery.clean) else " (some runs were not clean)")
        )
    restcpu = report.restcpu
    if restcpu and restcpu.cpu.get("sleep") and restcpu.cpu.get("rest"):
        medians = {m: statistics.median(v) for m, v in restcpu.cpu.items() if v}
        text = [
            f"\nREST CPU at {restcpu.rate} calls/s (medians of {len(restcpu.cpu['sleep'])} "
            f"runs each, {restcpu.requests} GETs per call): sleep {medians['sleep']:.3f} ms/call"
        ]
        text += [
            f"{mode} {medians[mode]:.3f} ms/call: "
            f"{(medians[mode] - medians['sleep']) * 1000 / restcpu.requests:+.0f} µs "
            "per REST request"
            for mode in ("rest", "rest-before")
            if mode in medians
        ]
        print("; ".join(text) + ("" if all(restcpu.clean) else " (some runs were not clean)"))
    memory = report.memory
    if memory and not memory.note:
        per = (memory.rss_waiting_kib - memory.rss_idle_kib) / max(memory.waiting, 1)
        text = [
            f"Memory: {memory.waiting} of {memory.transactions} INVITE transactions waiting "
            f"on sleep({memory.wait:g}): RSS {memory.rss_idle_kib / 1024:.1f} MiB idle, "
            f"{memory.rss_waiting_kib / 1024:.1f} MiB with them: {per:.1f} KiB per "
            f"transaction (proxy CPU {memory.accept_cpu_ms:.3f} ms per INVITE taken).",
            f"{memory.cancelled_487} answered 487 after their CANCEL",
        ]
        if memory.cancel_seconds is not None:
            text[-1] += f", the last {memory.cancel_seconds:.2f} s after the first CANCEL"
        text[-1] += f"; RSS {memory.rss_after_kib / 1024:.1f} MiB after."
        if memory.early_finals:
            text.append(f"{memory.early_finals} INVITEs had another final response first.")
        print("\n" + " ".join(text))
    elif memory:
        print(f"\nMemory: not measured: {memory.note}")


if __name__ == "__main__":
    sys.exit(main())
