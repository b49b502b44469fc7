"""What a flood of garbage costs the log: bytes and lines per bad message, and the probes.

Starts ``triosip run`` (default routes, relaying to a responder of this script) with its
log in a file, sends ``--count`` bad datagrams from one source at ``--rate`` per second —
a mix of 60 KB junk, a request with a broken Via, non-UTF-8 bytes, a truncated head —
with a probe OPTIONS every ``--probe-every`` of them that must come back 200, then prints
the log's size per bad message and how many probes were answered.

    .venv/bin/python bench/bench_garbage.py --count 20000 --rate 5000
    .venv/bin/python bench/bench_garbage.py --triosip-cmd "/tmp/old/.venv/bin/triosip run"

Everything is on 127.0.0.1; the script stops the proxy it started, by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JUNK = [
    b"\xff\xfe" + os.urandom(60_000),
    b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP ;;;\r\nCall-ID: x\r\n\r\n",
    b"OPTIONS sip:\xe9\xff@example.com SIP/2.0\r\nVia: \x00\x01\r\n\r\n",
    b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\nCSe",
    b"SIP/2.0 200 OK\r\nVia: " + b" " * 30_000 + b"\r\n\r\n",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def options(port: int, n: int) -> bytes:
    return (
        f"OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-probe{n};rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:bench@127.0.0.1>;tag=b\r\nTo: <sip:probe@127.0.0.1>\r\n"
        f"Call-ID: probe-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def answer_requests(callee: socket.socket) -> None:
    """Answer every request waiting on `callee` with a 200 (headers copied from it)."""
    while True:
        try:
            data, source = callee.recvfrom(65535)
        except BlockingIOError:
            return
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        keep = [line for line in head[1:] if line.split(b":", 1)[0].lower() in KEEP]
        response = b"\r\n".join([b"SIP/2.0 200 OK", *keep, b"Content-Length: 0", b"", b""])
        callee.sendto(response, source)


KEEP = {b"via", b"from", b"to", b"call-id", b"cseq"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="bad messages to send")
    parser.add_argument("--rate", type=float, default=5_000, help="bad messages per second")
    parser.add_argument("--probe-every", type=int, default=500, help="a probe per N bad ones")
    parser.add_argument(
        "--triosip-cmd",
        default=f"{sys.executable} -m triosip run",
        help="the command that runs triosip (before/after: point at another tree's venv)",
    )
    args = parser.parse_args(argv)

    port = free_port()
    callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    callee.bind(("127.0.0.1", 0))
    callee.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    sender.setblocking(False)
    sender_port = sender.getsockname()[1]
    proxy_address = ("127.0.0.1", port)
    command = [
        *shlex.split(args.triosip_cmd),
        "--listen",
        f"udp:127.0.0.1:{port}",
        "--mi",
        "off",
        "--log-level",
        "INFO",
        "--define",
        f"downstream=udp:127.0.0.1:{callee.getsockname()[1]}",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-garbage-") as tmp:
        log_path = Path(tmp) / "triosip.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=tmp
            )
        try:
            probes_sent, probes_answered = 0, 0
            # Wait until the proxy answers a first probe: it is up.
            deadline = time.monotonic() + 15
            while probes_answered == 0:
                if time.monotonic() > deadline or process.poll() is not None:
                    print(f"triosip did not start:\n{log_path.read_text(errors='replace')}")
                    return 1
                sender.sendto(options(sender_port, -1), proxy_address)
                select.select([sender, callee], [], [], 0.2)
                answer_requests(callee)
                time.sleep(0.05)
                probes_answered += drain_responses(sender)
            start_bytes = log_path.stat().st_size
            start_lines = len(log_path.read_bytes().splitlines())
            probes_answered = 0
            started = time.monotonic()
            for n in range(args.count):
                # Paced: the n-th message leaves at n / rate seconds.
                delay = started + n / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                with contextlib.suppress(BlockingIOError):
                    sender.sendto(JUNK[n % len(JUNK)], proxy_address)
                if n % args.probe_every == 0:
                    sender.sendto(options(sender_port, n), proxy_address)
                    probes_sent += 1
                answer_requests(callee)
                probes_answered += drain_responses(sender)
            elapsed = time.monotonic() - started
            end = time.monotonic() + 2
            while time.monotonic() < end:
                select.select([sender, callee], [], [], 0.1)
                answer_requests(callee)
                probes_answered += drain_responses(sender)
            alive = process.poll() is None
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        data = log_path.read_bytes()
        log_bytes = len(data) - start_bytes
        log_lines = len(data.splitlines()) - start_lines
        tracebacks = data.count(b"Traceback")
    print(f"triosip: {shlex.join(command)}")
    print(f"bad messages sent: {args.count} in {elapsed:.1f} s ({args.count / elapsed:.0f}/s)")
    print(f"log: {log_bytes} bytes, {log_lines} lines, {tracebacks} tracebacks")
    print(f"log bytes per bad message: {log_bytes / args.count:.1f}")
    print(f"probes answered: {probes_answered} of {probes_sent}")
    print(f"proxy alive at the end: {alive}; exit code {process.returncode}")
    return 0


def drain_responses(sender: socket.socket) -> int:
    """How many 200s to probes are waiting on `sender` (others are read and ignored)."""
    answered = 0
    while True:
        try:
            data, _ = sender.recvfrom(65535)
        except BlockingIOError:
            return answered
        if data.startswith(b"SIP/2.0 200") and b"probe-" in data:
            answered += 1


if __name__ == "__main__":
    sys.exit(main())
