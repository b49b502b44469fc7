"""SIP round trips while the MI serves ``/tasks`` with many live transactions.

A proxy (in this process, as ``triosip run`` runs it: one trio loop) holds
``--transactions`` (1,000) INVITE transactions live: each is relayed to a callee here that
answers 180 and never a final response, and fr_inv_timeout is an hour. Then a pinger
sends OPTIONS, which the routes answer 200 at once, one every ``--interval`` (5 ms), and
measures each round trip, first for ``--duration`` seconds with the MI left alone, then
for as long again while another process fetches ``--path`` (``/tasks``) in a loop. The
fetcher runs in its own process so that reading the document costs this loop nothing:
what the round trips show is what serving the MI stalls of the proxy.

Run from the repository root; to measure another tree (the code before a change), put it
first on the path::

    .venv/bin/python bench/bench_mi.py
    .venv/bin/python bench/bench_mi.py --path '/tasks?limit=50' --path '/tasks?summary=1'
    git worktree add /tmp/mi-old 171ebf4
    PYTHONPATH=/tmp/mi-old .venv/bin/python bench/bench_mi.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import trio

import triosip
from triosip.mi import MIConfig
from triosip.script.api import RequestContext, Routes
from triosip.testing.proxy import UdpPeer, local_config, open_udp_peer, start_proxy
from triosip.transport import Address

# The fetcher: GET the URL in a loop for a while, then print each fetch's time and size.
FETCHER = """
import json, sys, time, urllib.request
url, duration = sys.argv[1], float(sys.argv[2])
fetches = []
end = time.monotonic() + duration
while time.monotonic() < end:
    start = time.monotonic()
    with urllib.request.urlopen(url) as response:
        size = len(response.read())
    fetches.append((time.monotonic() - start, size))
print(json.dumps(fetches))
"""


def bench_routes() -> Routes:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        if req.method == "INVITE":
            await req.relay(req.params["callee"])
        else:
            await req.reply(200)

    return routes


async def ring(callee: UdpPeer) -> None:
    """Answer every INVITE 180, and never more: its transaction stays live."""
    while True:
        request, source = await callee.receive_request("INVITE")
        await callee.respond(request, 180, source)


async def round_trips(
    pinger: UdpPeer, proxy: Address, duration: float, interval: float
) -> list[float]:
    """OPTIONS round trips, one every `interval` seconds for `duration`, in ms."""
    rtts: list[float] = []
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        request = pinger.request("OPTIONS")
        start = time.perf_counter()
        await pinger.send(request, proxy)
        await pinger.receive_response(method="OPTIONS")
        rtts.append((time.perf_counter() - start) * 1000)
        await trio.sleep(interval)
    return rtts


class Ticker:
    """A task that wakes every millisecond and keeps the longest gap between two of its
    wake-ups, on the wall clock and in this thread's CPU time: the longest stretch the
    loop ran something else (the CPU time leaves out the other processes of the machine)."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def __str__(self) -> str:
        return (
            f"longest stretch without a checkpoint: {self.wall * 1000:.0f} ms "
            f"({self.cpu * 1000:.0f} ms CPU)"
        )

    def reset(self) -> None:
        self.wall = self.cpu = 0.0

    async def run(self) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        while True:
            await trio.sleep(0.001)
            now_wall, now_cpu = time.perf_counter(), time.thread_time()
            self.wall = max(self.wall, now_wall - wall)
            self.cpu = max(self.cpu, now_cpu - cpu)
            wall, cpu = now_wall, now_cpu


def describe(label: str, rtts: list[float]) -> str:
    ordered = sorted(rtts)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (
        f"{label:<28} n={len(rtts):5d}  p50 {statistics.median(rtts):7.2f} ms  "
        f"p99 {p99:7.2f} ms  max {max(rtts):7.2f} ms"
    )


async def fetch_while(url: str, duration: float) -> list[tuple[float, int]]:
    result = await trio.run_process(
        [sys.executable, "-c", FETCHER, url, str(duration)], capture_stdout=True, check=True
    )
    fetches: list[tuple[float, int]] = json.loads(result.stdout)
    return fetches


async def main(args: argparse.Namespace) -> None:
    print(f"triosip from {triosip.__file__}")
    async with (
        open_udp_peer() as callee,
        open_udp_peer() as caller,
        open_udp_peer() as pinger,
        trio.open_nursery() as nursery,
    ):
        running = await start_proxy(
            nursery,
            bench_routes(),
            params={"callee": callee.destination},
            fr_timeout=3600.0,
            fr_inv_timeout=3600.0,
            listen=[Address("udp", "127.0.0.1", 0)],
            # As `triosip run` does: what survives a second leaves the collector's sight,
            # so that its full collections do not walk the live transactions (and stall).
            config=local_config(mi=MIConfig(port=0), freeze_gc=True),
        )
        mi = running.running.mi
        assert mi is not None
        nursery.start_soon(ring, callee)
        layer = running.proxy.transactions
        for sent in range(args.transactions):
            await caller.send(caller.request("INVITE"), running.udp)
            if sent % 50 == 49:  # in bursts the socket buffers take
                # The layer's counters have no event to wait on: poll them.
                while layer.statistics().client_active < sent + 1 - 10:  # noqa: ASYNC110
                    await trio.sleep(0.01)
        while layer.statistics().server_active < args.transactions:  # noqa: ASYNC110
            await trio.sleep(0.05)
        await trio.sleep(0.5)  # every branch has had its 180
        print(
            f"{layer.statistics().server_active} live transactions, "
            f"{layer.statistics().client_active} branches"
        )

        ticker = Ticker()
        nursery.start_soon(ticker.run)
        rtts = await round_trips(pinger, running.udp, args.duration, args.interval)
        print(describe("MI idle", rtts))
        print(f"{'':28} {ticker}")
        for path in args.path:
            url = f"http://{mi[0]}:{mi[1]}{path}"
            fetches: list[tuple[float, int]] = []

            async def fetch(url: str = url, into: list[tuple[float, int]] = fetches) -> None:
                into.extend(await fetch_while(url, args.duration))

            async with trio.open_nursery() as fetching:
                fetching.start_soon(fetch)
                await trio.sleep(0.2)  # the fetcher's interpreter has started
                ticker.reset()
                rtts = await round_trips(pinger, running.udp, args.duration - 0.4, args.interval)
            print(describe(f"GET {path} in a loop", rtts))
            times = [seconds * 1000 for seconds, _ in fetches]
            print(
                f"{'':28} {len(fetches)} fetches, {statistics.median(times):.0f} ms each "
                f"(median), {fetches[0][1] / 1e6:.2f} MB; {ticker}"
            )
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per phase")
    parser.add_argument("--interval", type=float, default=0.005, help="seconds between pings")
    parser.add_argument(
        "--path", action="append", help="the MI path fetched in a loop (repeatable)"
    )
    arguments = parser.parse_args()
    arguments.path = arguments.path or ["/tasks"]
    trio.run(main, arguments)
