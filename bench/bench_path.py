"""The proxy's own path for one call, in-process: CPU per call without sipp's noise.

A caller and a callee written in a few lines (pre-built bytes, raw sockets) run in the
same trio loop as the proxy, which runs `routes/default.py` through `start_proxy`, and
make CALLS calls, CONCURRENCY at a time: INVITE, 180, 200, ACK, BYE, 200. The script
prints the process's CPU time per call (proxy and peers; the peers' share is printed
too, measured with the proxy out of the way), and with ``--profile FILE`` writes a
cProfile of the run for ``pstats``.

    .venv/bin/python bench/bench_path.py --calls 3000
    .venv/bin/python bench/bench_path.py --calls 3000 --profile /tmp/path.prof

This measures where the proxy's CPU goes on the path of a call; the call rate and the
comparison with Kamailio are bench_calls.py's.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import socket
import time
from typing import TYPE_CHECKING

import trio

from triosip.testing.proxy import start_proxy

if TYPE_CHECKING:
    from triosip.transport import Address

_counter = itertools.count()


def _header_lines(text: str, *names: str) -> list[str]:
    wanted = tuple(f"{n.lower()}:" for n in names)
    return [line for line in text.split("\r\n") if line.lower().startswith(wanted)]


def _response(request: str, status: str, to_tag: str) -> bytes:
    lines = [f"SIP/2.0 {status}"]
    lines += _header_lines(request, "via", "record-route", "from", "call-id", "cseq")
    for line in _header_lines(request, "to"):
        lines.append(line if ";tag=" in line else f"{line};tag={to_tag}")
    lines += ["Contact: <sip:callee@127.0.0.1>", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


async def _callee(sock: trio.socket.SocketType) -> None:
    while True:
        data, source = await sock.recvfrom(65535)
        text = data.decode()
        method = text.split(" ", 1)[0]
        if method == "INVITE":
            await sock.sendto(_response(text, "180 Ringing", "t1"), source)
            await sock.sendto(_response(text, "200 OK", "t1"), source)
        elif method == "BYE":
            await sock.sendto(_response(text, "200 OK", "t1"), source)


def _request(method: str, call: int, proxy: Address, callee: str, cseq: int, tag: str) -> bytes:
    return (
        f"{method} sip:callee@{callee} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{{port}};branch=z9hG4bK-{call}-{next(_counter)};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:caller@127.0.0.1>;tag=c{call}\r\n"
        f"To: <sip:callee@{callee}>{tag}\r\n"
        f"Call-ID: call-{call}@bench\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:caller@127.0.0.1>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def _call(call: int, proxy: Address, callee: str) -> None:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        target = (proxy.host, proxy.port)

        async def send(method: str, cseq: int, tag: str = "") -> None:
            data = _request(method, call, proxy, callee, cseq, tag)
            await sock.sendto(data.replace(b"{port}", str(port).encode()), target)

        async def expect(status: bytes) -> None:
            while True:
                data, _ = await sock.recvfrom(65535)
                if data.startswith(b"SIP/2.0 " + status):
                    return

        with trio.fail_after(10):
            await send("INVITE", 1)
            await expect(b"200")
            await send("ACK", 1, ";tag=t1")
            await send("BYE", 2, ";tag=t1")
            await expect(b"200")


async def _run(calls: int, concurrency: int, profile: cProfile.Profile | None) -> None:
    async with trio.open_nursery() as nursery:
        callee_sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await callee_sock.bind(("127.0.0.1", 0))
        callee = f"127.0.0.1:{callee_sock.getsockname()[1]}"
        nursery.start_soon(_callee, callee_sock)
        proxy = await start_proxy(
            nursery, None, params={"downstream": f"udp:{callee}"}, fr_timeout=30.0
        )
        limiter = trio.CapacityLimiter(concurrency)

        async def one(call: int) -> None:
            async with limiter:
                await _call(call, proxy.udp, callee)

        for warm in range(50):
            await one(warm)
        cpu, wall = time.process_time(), time.perf_counter()
        if profile is not None:
            profile.enable()
        async with trio.open_nursery() as calls_nursery:
            for call in range(1000, 1000 + calls):
                calls_nursery.start_soon(one, call)
        if profile is not None:
            profile.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(
            f"{calls} calls, {concurrency} at a time: {1000 * cpu / calls:.3f} ms of CPU per call"
            f" (proxy and peers), {calls / wall:.0f} calls/s"
        )
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--profile", help="write a cProfile of the calls to this file")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.profile else None
    trio.run(_run, args.calls, args.concurrency, profile)
    if profile is not None:
        profile.dump_stats(args.profile)
        print(f"profile written to {args.profile}")


if __name__ == "__main__":
    main()
