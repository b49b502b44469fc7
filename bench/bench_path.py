"""The proxy's own CPU per call, without sipp: where a call's time goes, and how much.

The proxy runs `routes/default.py` in this process (through `start_proxy`); a caller and
a callee run in a child process, in one plain `select` loop over two sockets, and make
CALLS calls, CONCURRENCY at a time: INVITE, (100), 180, 200, ACK, BYE, 200. The script
prints this process's CPU time per call — the proxy's alone, since the peers run
elsewhere — and with ``--profile FILE`` writes a cProfile of the calls for ``pstats``.

    .venv/bin/python bench/bench_path.py --calls 3000
    .venv/bin/python bench/bench_path.py --calls 3000 --profile /tmp/path.prof

The peers send as fast as answers come (a closed loop), so the figure is the proxy's CPU
per call at its full speed on one core; the call rates, the comparison with Kamailio and
the clean-rate criteria are bench_calls.py's.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import multiprocessing
import os
import select
import socket
import time

import trio

from triosip.testing.proxy import local_config, start_proxy
from triosip.transport import Address

_INVITE = (
    "{method} sip:callee@{callee} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call}-{cseq};rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:caller@127.0.0.1>;tag=c{call}\r\n"
    "To: <sip:callee@{callee}>{to_tag}\r\n"
    "Call-ID: call-{call}@bench\r\n"
    "CSeq: {cseq} {method}\r\n"
    "Contact: <sip:caller@127.0.0.1:{port}>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def _answer(request: bytes, status: str) -> bytes:
    lines = [f"SIP/2.0 {status}"]
    for line in request.decode().split("\r\n")[1:]:
        name = line.split(":", 1)[0].lower()
        if name in ("via", "record-route", "from", "call-id", "cseq"):
            lines.append(line)
        elif name == "to":
            lines.append(line if ";tag=" in line else line + ";tag=callee")
    lines += ["Contact: <sip:callee@127.0.0.1>", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def _peers(
    proxy: tuple[str, int],
    calls: int,
    concurrency: int,
    ready: multiprocessing.Queue,  # type: ignore[type-arg]
    go: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for sock in (caller, callee):
        sock.bind(("127.0.0.1", 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    port = caller.getsockname()[1]
    callee_at = f"127.0.0.1:{callee.getsockname()[1]}"
    ready.put(callee_at)
    go.get()  # the proxy knows where the callee is: go

    def send(method: str, call: int, cseq: int, to_tag: str = "") -> None:
        text = _INVITE.format(
            method=method, callee=callee_at, port=port, call=call, cseq=cseq, to_tag=to_tag
        )
        caller.sendto(text.encode(), proxy)

    started = done = 0
    while started < min(concurrency, calls):
        send("INVITE", started, 1)
        started += 1
    deadline = time.monotonic() + 60
    while done < calls and time.monotonic() < deadline:
        readable, _, _ = select.select([caller, callee], [], [], 1.0)
        for sock in readable:
            data, source = sock.recvfrom(65535)
            if sock is callee:
                if data.startswith(b"INVITE"):
                    callee.sendto(_answer(data, "180 Ringing"), source)
                    callee.sendto(_answer(data, "200 OK"), source)
                elif data.startswith(b"BYE"):
                    callee.sendto(_answer(data, "200 OK"), source)
                continue
            if not data.startswith(b"SIP/2.0 200"):
                continue
            call = int(data.split(b"Call-ID: call-", 1)[1].split(b"@", 1)[0])
            if b" INVITE\r\n" in data:
                send("ACK", call, 1, ";tag=callee")
                send("BYE", call, 2, ";tag=callee")
            else:
                done += 1
                if started < calls:
                    send("INVITE", started, 1)
                    started += 1
    ready.put(done)


async def _run(calls: int, concurrency: int, profile: cProfile.Profile | None) -> None:
    context = multiprocessing.get_context("spawn")
    # One queue each way: with one, the parent could read back its own "go" and wait for
    # peers that never started (this used to hang a run now and then).
    ready, go = context.Queue(), context.Queue()
    async with trio.open_nursery() as nursery:
        proxy_port = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with proxy_port:  # only to learn a free port
            await proxy_port.bind(("127.0.0.1", 0))
            port = proxy_port.getsockname()[1]
        peers = context.Process(
            target=_peers, args=(("127.0.0.1", port), calls, concurrency, ready, go)
        )
        peers.start()
        callee = await trio.to_thread.run_sync(ready.get)
        running = await start_proxy(
            nursery,
            None,
            params={"downstream": f"udp:{callee}"},
            listen=[Address("udp", "127.0.0.1", port)],
            # As `triosip run` does: long-lived objects kept out of the collector's walks.
            config=local_config(freeze_gc=True),
        )
        collections = [generation["collections"] for generation in gc.get_stats()]
        times, wall = os.times(), time.perf_counter()
        if profile is not None:
            profile.enable()
        go.put("go")
        done = await trio.to_thread.run_sync(ready.get)
        if profile is not None:
            profile.disable()
        end, wall = os.times(), time.perf_counter() - wall
        user, system = end.user - times.user, end.system - times.system
        await trio.to_thread.run_sync(peers.join)
        per_call = 1000 / max(done, 1)
        collected = [g["collections"] - c for g, c in zip(gc.get_stats(), collections, strict=True)]
        print(
            f"{done} of {calls} calls, {concurrency} at a time: proxy CPU"
            f" {(user + system) * per_call:.3f} ms per call (user {user * per_call:.3f},"
            f" system {system * per_call:.3f}), {done / wall:.0f} calls/s;"
            f" garbage collections (generations 0/1/2): {'/'.join(map(str, collected))}"
        )
        running.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--profile", help="write a cProfile of the calls to this file")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.profile else None
    trio.run(_run, args.calls, args.concurrency, profile)
    if profile is not None:
        profile.dump_stats(args.profile)
        print(f"profile written to {args.profile}")


if __name__ == "__main__":
    main()
