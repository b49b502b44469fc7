"""A long wire fuzz of ``triosip run``: mutated messages over UDP and TCP for minutes,
with a probe every second, then whether the proxy came through.

The proxy runs as a subprocess (``python -m triosip.testing.fuzz run``: the ``triosip``
command line with every host name unresolvable and TCP bound to loopback, so nothing
leaves this machine), with the default routes, ``--log-level INFO`` and its standard
error in a file. A callee in this process answers 200 to every request relayed to it.
The cases come from `triosip.testing.fuzz.Mutator` (``--seed``, then seed+1... as each
sequence is used up), the `known_cases` first. Every second a valid OPTIONS probe goes
over UDP and must come back answered 200 within 2 s.

It prints: the cases sent per transport, the probes answered out of those sent, whether
the process is still alive (and its exit code if not), the count of "Traceback" and of
ERROR lines in its log, and the statuses it answered; the exit code is 0 only if the
proxy survived, every probe was answered and the log holds no traceback.

Usage (from the repository root)::

    .venv/bin/python bench/bench_fuzz.py --fuzz-minutes 30 --transport udp,tcp --seed 1
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

from triosip.sip import Response
from triosip.testing.fuzz import FuzzCallee, Mutator, judge, open_tcp_fuzz_client
from triosip.testing.proxy import open_udp_peer
from triosip.testing.sipp import find_free_port, stop_process, wait_listening
from triosip.transport import Address


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--fuzz-minutes", type=float, default=0.5, help="how long to fuzz")
    parser.add_argument("--transport", default="udp,tcp", help="udp, tcp or udp,tcp")
    parser.add_argument("--seed", type=int, default=1, help="the first mutator's seed")
    parser.add_argument(
        "--rate",
        type=float,
        default=400,
        help="cases a second per transport: below what the proxy can take, so that a lost "
        "probe means a stuck proxy, not a saturated one (0: as fast as it goes)",
    )
    parser.add_argument("--cases-per-seed", type=int, default=5000, help="then the next seed")
    parser.add_argument(
        "--big-run", type=int, default=8000, help="the longest whitespace run of a rare case"
    )
    parser.add_argument("--log", default=None, help="where the proxy's stderr goes")
    parser.add_argument(
        "--no-known",
        action="store_true",
        help="leave out the known cases (to look past a crash that is not fixed yet)",
    )
    return parser.parse_args(argv)


class Run:
    def __init__(self) -> None:
        self.sent: collections.Counter[str] = collections.Counter()
        self.probes_sent = 0
        self.probes_answered = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self.wrong: dict[str, str] = {}
        self.died = False

    def judge(self, response: Response) -> None:
        self.statuses[response.status] += 1
        wrong = judge(response)
        if wrong is not None:
            self.wrong.setdefault(wrong, response.call_id)


async def fuzz_transport(
    run: Run, transport: str, proxy: Address, args: argparse.Namespace, stop_at: float
) -> None:
    seed = args.seed if transport == "udp" else args.seed + 1_000_000
    async with open_udp_peer(strict=False) as fuzzer, open_tcp_fuzz_client(proxy) as tcp:
        caller = fuzzer.address.host_port if transport == "udp" else "127.0.0.1:9"
        started, count = trio.current_time(), 0
        while trio.current_time() < stop_at and not run.died:
            mutator = Mutator(
                seed,
                caller=caller,
                proxy=proxy.host_port,
                transport=transport.upper(),
                big_run=args.big_run,
            )
            known = [] if args.no_known else mutator.known()
            cases = [*known, *(next(mutator) for _ in range(args.cases_per_seed))]
            for case in cases:
                if trio.current_time() >= stop_at or run.died:
                    break
                try:
                    if transport == "udp":
                        await fuzzer.send(case.data, proxy)
                    else:
                        await tcp.send(case.data)
                except OSError:
                    run.died = True
                    break
                run.sent[transport] += 1
                count += 1
                if args.rate:
                    await trio.sleep_until(started + count / args.rate)  # paced
                elif count % 25 == 0:
                    await trio.sleep(0.002)  # as fast as it goes, letting the probe in
            seed += 1
        for message in fuzzer.messages:
            if isinstance(message, Response):
                run.judge(message)
        for response in tcp.responses:
            run.judge(response)


async def probe(run: Run, proxy: Address, stop_at: float) -> None:
    async with open_udp_peer() as prober:
        while trio.current_time() < stop_at and not run.died:
            options = prober.request("OPTIONS", "sip:bob@127.0.0.1")
            run.probes_sent += 1
            await prober.send(options, proxy)
            with trio.move_on_after(2):
                while True:
                    response = await prober.receive_response()
                    if response.call_id == options.call_id:
                        run.probes_answered += response.status == 200
                        break
            await trio.sleep(1)


async def bench(args: argparse.Namespace) -> int:
    transports = [t.strip() for t in args.transport.split(",") if t.strip()]
    port = find_free_port("udp")
    log = Path(args.log) if args.log else Path(tempfile.mkdtemp(prefix="bench_fuzz.")) / "proxy.log"
    run = Run()
    async with open_udp_peer(strict=False) as callee_peer, trio.open_nursery() as nursery:
        callee = FuzzCallee(callee_peer)
        nursery.start_soon(callee.serve)
        command = [
            sys.executable,
            "-m",
            "triosip.testing.fuzz",
            "run",
            "--mi",
            "off",
            "--log-level",
            "INFO",
            "--fr-timeout",
            "2",
            "--fr-inv-timeout",
            "2",
            "--listen",
            f"udp:127.0.0.1:{port}",
            "--listen",
            f"tcp:127.0.0.1:{port}",
            "--define",
            f"downstream={callee_peer.destination}",
        ]
        data_dir = tempfile.mkdtemp(prefix="bench_fuzz_data.")
        with log.open("wb") as stderr:
            process = await trio.lowlevel.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, "TRIOSIP_DATA_DIR": data_dir},
            )
        try:
            with trio.fail_after(20):
                await wait_listening(process, port, "udp")
                await wait_listening(process, port, "tcp")
            start = trio.current_time()
            stop_at = start + args.fuzz_minutes * 60

            async def watch() -> None:
                while trio.current_time() < stop_at and not run.died:
                    if process.poll() is not None:
                        run.died = True
                    await trio.sleep(0.2)

            async with trio.open_nursery() as fuzzing:
                fuzzing.start_soon(watch)
                fuzzing.start_soon(probe, run, Address("udp", "127.0.0.1", port), stop_at)
                for transport in transports:
                    proxy = Address(transport, "127.0.0.1", port)
                    fuzzing.start_soon(fuzz_transport, run, transport, proxy, args, stop_at)
            elapsed = trio.current_time() - start
            alive = process.poll() is None
        finally:
            status = await stop_process(process, first_signal=signal.SIGTERM, grace=3)
        nursery.cancel_scope.cancel()

    text = log.read_text(errors="replace")
    tracebacks = text.count("Traceback")
    errors = sum(1 for line in text.splitlines() if " ERROR " in line)
    print(f"fuzzed {elapsed:.0f} s (seed {args.seed}, transports {','.join(transports)})")
    for transport in transports:
        sent = run.sent[transport]
        print(f"  {transport}: {sent} cases sent ({sent / max(elapsed, 1e-9):.0f}/s)")
    print(f"  probes answered: {run.probes_answered}/{run.probes_sent}")
    print(f"  proxy alive at the end: {alive}; exit code {status} (after SIGTERM if alive)")
    print(f"  log {log}: {tracebacks} 'Traceback', {errors} ERROR lines")
    print(f"  callee answered {callee.answered} relayed requests")
    print(f"  statuses to the fuzzer: {dict(sorted(run.statuses.items()))}")
    for wrong, call_id in run.wrong.items():
        print(f"  WRONG: {wrong} (Call-ID {call_id})")
    ok = alive and run.probes_answered == run.probes_sent and tracebacks == 0 and not run.wrong
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    return trio.run(bench, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
