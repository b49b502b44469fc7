"""Call rate through a SIP proxy: sipp uac -> [proxy] -> sipp uas, at stepped call rates.

For each target (``ceiling``: uac straight to uas, no proxy; ``kamailio``: Debian's
Kamailio with bench/kamailio.cfg; ``triosip``: ``python -m triosip run``) and each call
rate, it runs sipp's uac for a fixed time, at least twice, and reports per run: calls
attempted / succeeded / failed, retransmissions, call setup time (INVITE to 200) p50 and
p99, the rate sipp really kept, the CPU seconds per 1,000 calls of the proxy (its
process and all its children, from /proc/PID/stat) and of the two sipps, and the
datagrams the kernel dropped for want of UDP receive buffer (all of 127.0.0.1).

A run is clean when no call failed, retransmissions stayed under 1% of the calls, and
sipp created all its calls within 110% of the planned time (plus 1 s). A rate is clean
when most of its runs are (two runs, and a third when they disagree): one run alone can
collapse into a retransmission storm from host noise. The result per target is the
highest clean rate. See bench/README.md for how to run it and bench/RESULTS.md for
figures.

Usage (from the repository root)::

    .venv/bin/python bench/bench_calls.py --targets ceiling,kamailio \\
        --rates 1000,2000,3000 --duration 10
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import trio

from triosip.testing.sipp import (
    UAC_RRS,
    UAS_RECORD_ROUTE,
    HarnessError,
    SippResult,
    find_free_port,
    is_listening,
    open_uas,
    run_uac,
    stop_process,
)

BENCH = Path(__file__).resolve().parent
TARGETS = ("ceiling", "kamailio", "triosip")
DEFAULT_TRIOSIP_CMD = (
    "{python} -m triosip run --mi off --listen udp:127.0.0.1:{port} "
    "--define downstream=udp:127.0.0.1:{uas_port}"
)
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Time given to the last calls (and any retransmission storm) after the planned duration.
DRAIN = 15.0
RETRANS_LIMIT = 0.01


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One run at one rate against one target."""

    target: str
    rate: int
    run: int
    attempted: int
    succeeded: int
    failed: int
    retransmissions: int
    setup_p50_ms: float | None
    setup_p99_ms: float | None
    kept_cps: float
    kept_rate: bool
    proxy_cpu_per_1000: float | None
    sipp_cpu_per_1000: float | None
    udp_drops: int

    @property
    def retrans_ratio(self) -> float:
        return self.retransmissions / self.attempted if self.attempted else 1.0

    @property
    def clean(self) -> bool:
        return (
            self.attempted > 0
            and self.failed == 0
            and self.retrans_ratio < RETRANS_LIMIT
            and self.kept_rate
        )


class ProxyUnavailable(Exception):
    """The proxy could not be started: the bench skips its target."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print_header(args)
    restore = tune_kernel(args.buff_size) if args.tune_kernel else {}
    try:
        runs = trio.run(bench, args)
    finally:
        for path, value in restore.items():
            Path(path).write_text(value)
            print(f"restored {path} = {value.strip()}")
    if args.json:
        rows = [{**asdict(r), "clean": r.clean} for r in runs]
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Call rate through a SIP proxy: sipp uac -> [proxy] -> sipp uas.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--targets",
        default="ceiling,kamailio,triosip",
        help=f"comma-separated, among {', '.join(TARGETS)}",
    )
    parser.add_argument(
        "--rates",
        default="200,500,1000,2000,3000,5000",
        help="comma-separated call rates (calls/s), run in this order",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of calls per run")
    parser.add_argument(
        "--runs", type=int, default=2, help="runs per rate (a third one breaks a 1-1 tie)"
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="keep raising the rate after a rate that is not clean",
    )
    parser.add_argument(
        "--scenario",
        choices=("builtin", "rrs"),
        default="builtin",
        help="builtin: sipp's uac/uas, ACK and BYE without Route; rrs: "
        "uac_rrs.xml/uas_record_route.xml, ACK and BYE along Record-Route",
    )
    parser.add_argument(
        "--buff-size",
        type=int,
        default=4 * 1024 * 1024,
        help="sipp's socket buffers (-buff_size), bytes",
    )
    parser.add_argument(
        "--tune-kernel",
        action="store_true",
        help="raise net.core.rmem_max/wmem_max to --buff-size for the run "
        "(root), and restore them at the end",
    )
    parser.add_argument(
        "--rtt-freq",
        type=int,
        default=100,
        help="sipp -rtt_freq: response times are logged in batches of this",
    )
    parser.add_argument(
        "--limit",
        type=float,
        default=1.0,
        help="sipp -l, most calls open at once, in seconds of calls",
    )
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    parser.add_argument("--kamailio", default="kamailio", help="the kamailio executable")
    parser.add_argument("--kamailio-cfg", default=str(BENCH / "kamailio.cfg"))
    parser.add_argument(
        "--kamailio-define",
        action="append",
        default=[],
        help="one more -A NAME=VALUE for kamailio (repeatable)",
    )
    parser.add_argument(
        "--kamailio-shm",
        type=int,
        default=2048,
        help="kamailio -m, shared memory in MB: each transaction lives 5 s after its "
        "final reply (tm's wait_timer), and 512 MB runs out at ~5,000 calls/s",
    )
    parser.add_argument(
        "--triosip-cmd",
        default=DEFAULT_TRIOSIP_CMD,
        help="command that starts triosip; {python}, {port} (where it "
        "listens) and {uas_port} (where it relays) are filled in",
    )
    parser.add_argument(
        "--startup-timeout", type=float, default=10.0, help="seconds a proxy gets to bind its port"
    )
    parser.add_argument("--json", help="also write every run to this JSON file")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose among {TARGETS}")
    args.rates = [int(r) for r in args.rates.split(",")]
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


async def bench(args: argparse.Namespace) -> list[Run]:
    all_runs: list[Run] = []
    verdicts: dict[str, str] = {}
    for target in args.targets:
        print(f"\n### {target} ({args.scenario} scenario)\n", flush=True)
        uas_port = find_free_port()
        try:
            async with open_proxy(target, args, uas_port) as proxy:
                runs, best = await bench_target(target, args, uas_port, proxy)
        except ProxyUnavailable as exc:
            print(f"{target} not available: {exc}")
            verdicts[target] = "not available"
            continue
        all_runs += runs
        verdicts[target] = f"{best} calls/s" if best else "no clean rate"
    print(
        "\nHighest clean rate (0 failed calls, < 1% retransmissions, rate kept; majority of runs):"
    )
    for target, verdict in verdicts.items():
        print(f"  {target:9} {verdict}")
    return all_runs


async def bench_target(target, args, uas_port, proxy):
    print(
        "| cps | run | attempted | ok | failed | retrans | setup p50 ms | setup p99 ms "
        "| kept cps | proxy CPU s/1k calls | sipp CPU s/1k calls | UDP drops | clean |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    runs: list[Run] = []
    best = 0
    for rate in args.rates:
        at_rate: list[Run] = []
        while len(at_rate) < args.runs or (
            len(at_rate) == 2 and at_rate[0].clean != at_rate[1].clean
        ):
            if proxy is not None and proxy.process.poll() is not None:
                print(f"{target} exited with status {proxy.process.returncode}: stopping")
                return runs + at_rate, best
            run = await one_run(target, args, rate, len(at_rate) + 1, uas_port, proxy)
            at_rate.append(run)
            print(format_run(run), flush=True)
            await trio.sleep(args.pause)
        runs += at_rate
        clean = sum(r.clean for r in at_rate) * 2 > len(at_rate)
        cpu = [r.proxy_cpu_per_1000 for r in at_rate if r.proxy_cpu_per_1000 is not None]
        summary = f"median proxy CPU {statistics.median(cpu):.3f} s/1k calls" if cpu else ""
        print(f"| {rate} | **{'clean' if clean else 'NOT clean'}** | {summary} ||||||||||")
        if clean:
            best = max(best, rate)
        elif not args.keep_going:
            break
    return runs, best


async def one_run(target, args, rate, number, uas_port, proxy) -> Run:
    calls = max(1, round(rate * args.duration))
    uas_scenario = "uas" if args.scenario == "builtin" else UAS_RECORD_ROUTE
    uac_scenario = "uac" if args.scenario == "builtin" else UAC_RRS
    children_before = children_cpu()
    drops_before = udp_receive_drops()
    proxy_before = tree_cpu(proxy.pid) if proxy else 0.0
    async with open_uas(
        port=uas_port,
        scenario=uas_scenario,
        stop_grace=0,
        buff_size=args.buff_size,
        rtt_freq=None,
        # Two proxy workers may relay an ACK after its BYE, or a 180 after its 200: ignore
        # such messages rather than abort the call. A call still succeeds only when every
        # message of its scenario came, and any call not successful at the end counts as
        # failed (see summarize).
        abort_unexpected=False,
    ) as uas:
        uac = await run_uac(
            uas.address,
            scenario=uac_scenario,
            remote_sending_address=f"127.0.0.1:{proxy.port}" if proxy else None,
            rate=rate,
            max_calls=calls,
            limit=max(10, math.ceil(rate * args.limit)),
            stop_after=args.duration + DRAIN,
            buff_size=args.buff_size,
            rtt_freq=args.rtt_freq,
            abort_unexpected=False,
        )
        proxy_after = tree_cpu(proxy.pid) if proxy else 0.0
    sipp_cpu = children_cpu() - children_before
    return summarize(
        target,
        rate,
        number,
        args.duration,
        uac,
        uas.result,
        proxy_cpu=proxy_after - proxy_before if proxy else None,
        sipp_cpu=sipp_cpu,
        udp_drops=udp_receive_drops() - drops_before,
    )


def summarize(
    target,
    rate,
    number,
    duration,
    uac: SippResult,
    uas: SippResult,
    *,
    proxy_cpu,
    sipp_cpu,
    udp_drops,
) -> Run:
    attempted = uac.calls_created
    # Every call that did not succeed by the end failed, whatever sipp called it.
    failed = attempted - uac.calls_successful + uas.calls_failed
    done = max(uac.calls_successful, 1)
    return Run(
        target=target,
        rate=rate,
        run=number,
        attempted=attempted,
        succeeded=uac.calls_successful,
        failed=failed,
        retransmissions=uac.retransmissions + uas.retransmissions,
        setup_p50_ms=uac.response_time_p50_ms,
        setup_p99_ms=uac.response_time_p99_ms,
        kept_cps=attempted / uac.duration if uac.duration > 0 else 0.0,
        kept_rate=attempted >= round(rate * duration) and uac.duration <= duration * 1.1 + 1,
        proxy_cpu_per_1000=None if proxy_cpu is None else proxy_cpu / done * 1000,
        sipp_cpu_per_1000=sipp_cpu / done * 1000,
        udp_drops=udp_drops,
    )


def format_run(r: Run) -> str:
    def ms(value):
        return "—" if value is None else f"{value:g}"

    def cpu(value):
        return "—" if value is None else f"{value:.3f}"

    return (
        f"| {r.rate} | {r.run} | {r.attempted} | {r.succeeded} | {r.failed} "
        f"| {r.retransmissions} ({r.retrans_ratio:.2%}) | {ms(r.setup_p50_ms)} "
        f"| {ms(r.setup_p99_ms)} | {r.kept_cps:.0f} | {cpu(r.proxy_cpu_per_1000)} "
        f"| {cpu(r.sipp_cpu_per_1000)} | {r.udp_drops} | {'yes' if r.clean else 'no'} |"
    )


@dataclass(frozen=True, slots=True)
class Proxy:
    process: trio.Process
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid


class open_proxy:  # an async context manager, named like trio's open_* ones
    """Start the target's proxy on a free port (nothing for ``ceiling``); stop its group."""

    def __init__(self, target: str, args: argparse.Namespace, uas_port: int) -> None:
        self.target = target
        self.args = args
        self.uas_port = uas_port
        self.process: trio.Process | None = None
        self.logdir = Path(tempfile.mkdtemp(prefix=f"bench-{target}-"))

    async def __aenter__(self) -> Proxy | None:
        if self.target == "ceiling":
            return None
        port = find_free_port()
        try:
            command = self.command(port)
        except ProxyUnavailable:
            await self.__aexit__(None, None, None)
            raise
        print(f"starting {self.target}: {shlex.join(command)}", flush=True)
        log = self.logdir / "stderr.log"
        output = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self.process = await trio.lowlevel.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        except OSError as exc:
            await self.__aexit__(None, None, None)
            raise ProxyUnavailable(f"{command[0]}: {exc}") from None
        finally:
            os.close(output)
        try:
            with trio.fail_after(self.args.startup_timeout):
                await wait_tree_listening(self.process, port)
                if "--workers" in command:
                    # Worker 0 binds first; the calls must not start before the others
                    # serve (what they own would wait in their hand-off queues).
                    await wait_for_line(self.process, log, "workers serve")
        except (HarnessError, trio.TooSlowError) as exc:
            reason = (
                f"did not bind udp:127.0.0.1:{port} within {self.args.startup_timeout}s"
                if isinstance(exc, trio.TooSlowError)
                else str(exc)
            )
            tail = log.read_text(errors="replace")[-1500:]
            await self.__aexit__(None, None, None)
            raise ProxyUnavailable(f"{reason}\n{tail}") from None
        return Proxy(process=self.process, port=port)

    async def __aexit__(self, *exc_info: object) -> None:
        if self.process is not None:
            await stop_process(self.process, process_group=True, grace=5.0)
            self.process = None
            # Kamailio says "ERROR: ... out of mem" and carries on: don't let that pass unseen.
            log = (self.logdir / "stderr.log").read_text(errors="replace").splitlines()
            errors = [line for line in log if "ERROR" in line or "CRITICAL" in line]
            if errors:
                print(f"{self.target} logged {len(errors)} error lines, the first: {errors[0]}")
        shutil.rmtree(self.logdir, ignore_errors=True)

    def command(self, port: int) -> list[str]:
        if self.target == "kamailio":
            kamailio = shutil.which(self.args.kamailio)
            if kamailio is None:
                raise ProxyUnavailable(
                    f"{self.args.kamailio!r} not found: install the Debian package "
                    "'kamailio' (apt-get install -y kamailio)"
                )
            return [
                kamailio,
                "-f",
                str(Path(self.args.kamailio_cfg).resolve()),
                "-DD",
                "-E",
                "-x",
                "tlsf",
                "-m",
                str(self.args.kamailio_shm),
                "-Y",
                str(self.logdir),
                "-w",
                str(self.logdir),
                "-l",
                f"udp:127.0.0.1:{port}",
                "-A",
                f'UAS="sip:127.0.0.1:{self.uas_port}"',
                *(word for define in self.args.kamailio_define for word in ("-A", define)),
            ]
        template = self.args.triosip_cmd
        filled = template.format(python=sys.executable, port=port, uas_port=self.uas_port)
        return shlex.split(filled)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and all its descendants, reaped ones included
    (``triosip run --workers N``: the supervisor and its workers)."""
    tree, times = _process_tree(pid)
    return sum(times.get(p, 0) for p in tree) / CLK_TCK


async def wait_tree_listening(process: trio.Process, port: int) -> None:
    """`wait_listening`, for a socket owned by ``process`` or one of its descendants (the
    workers of ``triosip run --workers N`` bind the port, not their supervisor)."""
    while not any(is_listening(pid, port) for pid in _process_tree(process.pid)[0]):
        if process.poll() is not None:
            raise HarnessError(f"process {process.pid} exited with status {process.returncode}")
        await trio.sleep(0.02)


async def wait_for_line(process: trio.Process, log: Path, text: str) -> None:
    """Wait until `text` appears in the `log` file of ``process``."""
    while not _has_line(log, text):
        if process.poll() is not None:
            raise HarnessError(f"process {process.pid} exited with status {process.returncode}")
        await trio.sleep(0.05)


def _has_line(log: Path, text: str) -> bool:
    return text in log.read_text(errors="replace")


def _process_tree(pid: int) -> tuple[set[int], dict[int, int]]:
    """``pid`` and its descendants, and the CPU clock ticks of every process."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        # proc(5): fields[1] ppid; [11..14] utime stime cutime cstime, in clock ticks
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = sum(int(f) for f in fields[11:15])
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return tree, times


def udp_receive_drops() -> int:
    """Datagrams the kernel dropped because a UDP receive buffer was full (all sockets)."""
    with open("/proc/net/snmp", encoding="ascii") as snmp:
        udp = [line.split() for line in snmp if line.startswith("Udp:")]
    return int(udp[1][udp[0].index("RcvbufErrors")])


def children_cpu() -> float:
    """CPU seconds of this process's reaped children: the sipps once they have exited."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tune_kernel(size: int) -> dict[str, str]:
    restore = {}
    for name in ("rmem_max", "wmem_max"):
        path = f"/proc/sys/net/core/{name}"
        old = Path(path).read_text()
        if int(old) < size:
            try:
                Path(path).write_text(f"{size}\n")
            except OSError as exc:
                print(f"could not raise net.core.{name} to {size}: {exc}")
                continue
            restore[path] = old
            print(f"net.core.{name}: {old.strip()} -> {size} (restored at the end)")
        else:
            print(f"net.core.{name} = {old.strip()}, already >= {size}")
    return restore


def print_header(args: argparse.Namespace) -> None:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in run_text(["lscpu"]).splitlines()
            if line.startswith("Model name")
        ),
        platform.processor() or "?",
    )
    sipp = run_text(["sipp", "-v"]).strip().splitlines()
    kamailio = run_text([args.kamailio, "-v"]).splitlines() if shutil.which(args.kamailio) else []
    print(f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(
        f"machine: {model}, nproc {os.cpu_count()}, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )
    print(
        f"sipp: {sipp[0] if sipp else '?'}; "
        f"kamailio: {kamailio[0] if kamailio else 'not installed'}"
    )
    rmem = Path("/proc/sys/net/core/rmem_max").read_text().strip()
    wmem = Path("/proc/sys/net/core/wmem_max").read_text().strip()
    print(f"net.core.rmem_max={rmem} wmem_max={wmem}; sipp -buff_size {args.buff_size}")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"rates {args.rates} cps, {args.duration:g} s per run, {args.runs} runs per rate, "
        f"scenario {args.scenario}",
        flush=True,
    )


def run_text(command: list[str]) -> str:
    try:
        return subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


if __name__ == "__main__":
    sys.exit(main())
