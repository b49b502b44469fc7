"""A flood of unique OPTIONS at `triosip run`: what it holds, what it costs, what it answers.

One process sends RATE new OPTIONS a second (each its own Call-ID and branch, ~300 bytes)
from one UDP socket of 127.0.0.1 to a `triosip run` subprocess, for DURATION seconds, and
plays the downstream the proxy relays them to: it answers each 200 at once (``--downstream
answer``, so every transaction ends and is held 64*T1 for retransmissions), or never
(``blackhole``: each waits fr_timeout, then 408, then Timer J). It prints the proxy's peak
RSS (VmHWM), its transactions held at the end (from the MI), the responses the flood got by
status (200s relayed, 503s of the cap), and how long the proxy took to exit on SIGTERM.

Usage (from the repository root)::

    .venv/bin/python bench/bench_flood.py                        # 4,000/s for 30 s
    .venv/bin/python bench/bench_flood.py --max-transactions 20000
    .venv/bin/python bench/bench_flood.py --source /tmp/old      # another checkout's triosip
    .venv/bin/python bench/bench_flood.py --held-memory 10000    # KB per held transaction

``--held-memory N`` runs no proxy: in this process, a transaction layer whose transport
takes every datagram answers N OPTIONS 200, and tracemalloc measures what the N finished
transactions hold while they wait for Timer J, then how much CPU time cancelling the
layer takes (a shutdown after the grace).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import trio

from triosip.testing.sipp import find_free_port, stop_process, wait_listening

BATCH_PERIOD = 0.01  # seconds between bursts of sends


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=4000, help="new OPTIONS per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of flood")
    parser.add_argument(
        "--max-transactions", type=int, help="passed to triosip run (default: its own)"
    )
    parser.add_argument("--pike", type=float, help="passed to triosip run")
    parser.add_argument("--downstream", choices=("answer", "blackhole"), default="answer")
    parser.add_argument(
        "--source",
        type=Path,
        help="run the triosip of this checkout (PYTHONPATH), e.g. a worktree of an older commit",
    )
    parser.add_argument("--grace", type=float, default=10.0, help="triosip run --grace")
    parser.add_argument(
        "--held-memory", type=int, metavar="N", help="measure N held transactions in-process"
    )
    return parser.parse_args(argv)


def options(n: int, port: int, proxy_port: int) -> bytes:
    call_id = f"flood-{n}-{os.getpid()}"
    return (
        f"OPTIONS sip:probe@127.0.0.1:{proxy_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKflood{n:x};rport\r\n"
        "Max-Forwards: 70\r\n"
        "To: <sip:probe@127.0.0.1>\r\n"
        f"From: <sip:flood@127.0.0.1:{port}>;tag=f{n:x}\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


_COPIED = (b"via:", b"v:", b"from:", b"f:", b"call-id:", b"i:", b"cseq:")


def answer_200(request: bytes) -> bytes:
    lines = [b"SIP/2.0 200 OK"]
    for line in request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        lower = line.lower()
        if lower.startswith(_COPIED):
            lines.append(line)
        elif lower.startswith((b"to:", b"t:")):
            lines.append(line + b";tag=downstream")
    lines.append(b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def drain(sock: socket.socket) -> list[tuple[bytes, tuple[str, int]]]:
    got = []
    while True:
        try:
            got.append(sock.recvfrom(65535))
        except BlockingIOError:
            return got


async def flood(args: argparse.Namespace, uac: socket.socket, proxy_port: int) -> int:
    port = uac.getsockname()[1]
    sent = n = 0
    start = trio.current_time()
    while (elapsed := trio.current_time() - start) < args.duration:
        due = int(elapsed * args.rate) + 1
        while n < due:
            try:
                uac.sendto(options(n, port, proxy_port), ("127.0.0.1", proxy_port))
                sent += 1
            except BlockingIOError:
                pass
            n += 1
        await trio.sleep(BATCH_PERIOD)
    return sent


async def receive(sock: socket.socket, statuses: collections.Counter[str]) -> None:
    while True:
        await trio.lowlevel.wait_readable(sock)
        for data, _ in drain(sock):
            statuses[data.split(b"\r\n", 1)[0][8:].decode(errors="replace")] += 1


async def downstream(sock: socket.socket, answer: bool, seen: list[int]) -> None:
    while True:
        await trio.lowlevel.wait_readable(sock)
        for data, source in drain(sock):
            seen[0] += 1
            if answer and not data.startswith((b"SIP/2.0", b"ACK")):
                with contextlib.suppress(BlockingIOError):
                    sock.sendto(answer_200(data), source)


def status_of(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])  # kB
    return fields


def mi_transactions(mi_port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{mi_port}/stats", timeout=10) as reply:
        document = json.load(reply)
    return dict(document["transactions"])


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def main(args: argparse.Namespace) -> None:
    proxy_port, mi_port = find_free_port(), find_free_port("tcp")
    uac, uas = udp_socket(), udp_socket()
    command = [
        sys.executable, "-m", "triosip", "run",
        "--listen", f"udp:127.0.0.1:{proxy_port}",
        "--mi", f"127.0.0.1:{mi_port}",
        "--define", f"downstream=udp:127.0.0.1:{uas.getsockname()[1]}",
        "--grace", str(args.grace), "--log-level", "WARNING",
    ]  # fmt: skip
    if args.max_transactions is not None:
        command += ["--max-transactions", str(args.max_transactions)]
    if args.pike is not None:
        command += ["--pike", str(args.pike)]
    env = dict(os.environ)
    if args.source is not None:
        env["PYTHONPATH"] = str(args.source.resolve())
    statuses: collections.Counter[str] = collections.Counter()
    seen = [0]
    process = await trio.lowlevel.open_process(command, env=env, stderr=subprocess.DEVNULL)
    try:
        with trio.fail_after(30):
            await wait_listening(process, proxy_port)
            await wait_listening(process, mi_port, "tcp")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive, uac, statuses)
            nursery.start_soon(downstream, uas, args.downstream == "answer", seen)
            cpu_start = _cpu_seconds(process.pid)
            sent = await flood(args, uac, proxy_port)
            await trio.sleep(1.0)  # the last answers
            cpu = _cpu_seconds(process.pid) - cpu_start
            memory = status_of(process.pid)
            held = await trio.to_thread.run_sync(mi_transactions, mi_port)
            stop_started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(60):
                await process.wait()
            exit_seconds = time.monotonic() - stop_started
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            await stop_process(process)
    print(f"triosip from {args.source or 'this checkout'}; {args.rate}/s for {args.duration} s")
    print(f"  max-transactions {args.max_transactions or 'default'}, pike {args.pike}")
    print(f"  OPTIONS sent {sent:,}; relayed downstream {seen[0]:,}")
    print(f"  responses: {dict(sorted(statuses.items()))}")
    peak, end = memory["VmHWM"] / 1024, memory["VmRSS"] / 1024
    print(f"  proxy peak RSS {peak:.0f} MB, at the end {end:.0f} MB")
    print(f"  proxy CPU {cpu:.1f} s ({cpu / max(args.duration, 1e-9):.0%} of a core)")
    active = held.get("server_active", 0)
    kept = held.get("server_held", 0)
    print(f"  server transactions at the end: {active:,} tasks, {kept:,} held")
    rejected, limited = held.get("rejected_overload", "-"), held.get("rate_limited", "-")
    print(f"  rejected_overload {rejected}, rate_limited {limited}")
    print(f"  exit on SIGTERM took {exit_seconds:.1f} s (exit code {process.returncode})")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _TakesAll:
    """A transport whose socket takes every datagram (and drops it)."""

    def send_nowait(self, data: bytes, destination: object, *, local: object = None) -> bool:
        return True

    async def send(self, data: bytes, destination: object, **kwargs: object) -> None:
        await trio.lowlevel.checkpoint()


async def held_memory(count: int) -> None:
    import gc
    import tracemalloc

    from triosip.sip import build_response, parse_message
    from triosip.transaction import TimerConfig, TransactionLayer
    from triosip.transport import Address, Inbound

    async def on_request(st: object) -> None:
        await st.respond(build_response(st.request, 200, to_tag="held"))  # type: ignore[attr-defined]

    source, local = Address("udp", "127.0.0.1", 5070), Address("udp", "127.0.0.1", 5060)
    async with trio.open_nursery() as nursery:
        # Timer J = 64*T1 = 640 s: none expires while tracemalloc slows the run down.
        layer = TransactionLayer(
            _TakesAll(),  # type: ignore[arg-type]
            timers=TimerConfig(t1=10.0, t2=10.0),
            on_request=on_request,
            on_stray=lambda i: None,
        )
        await nursery.start(layer.serve)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for n in range(count):
            layer.receive(Inbound(parse_message(options(n, 5070, 5060)), source, local, None))
            if n % 200 == 0:
                await trio.testing.wait_all_tasks_blocked()
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        print(f"{count:,} OPTIONS answered and held; layer statistics: {layer.statistics()}")
        size = len(options(0, 5070, 5060))
        print(f"  memory held: {grown / count / 1024:.2f} KB per transaction (tracemalloc,")
        print(f"  its {size}-byte request and ~300-byte 200 included)")
        started = time.process_time()
        nursery.cancel_scope.cancel()
    print(f"  cancelling the layer took {time.process_time() - started:.3f} s of CPU")


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.held_memory:
        import trio.testing

        trio.run(held_memory, arguments.held_memory)
    else:
        trio.run(main, arguments)
