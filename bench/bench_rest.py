"""CPU per REST request, outside the proxy: triosip's rest client against httpx on anyio.

One process runs ``--concurrency`` (50) tasks that each send GETs over keep-alive connections
to a local HTTP/1.1 service (bench_async.py's, in a process of its own, answering at once),
``--requests`` in all, and measures this process's CPU time (user + system, os.times) per request.
The clients alternate, run after run (``--runs``, best of), so that the shared machine's noise
hits both alike:

- ``triosip``: ``RestClient.get`` as a route awaits it (triosip.ops: httptools on trio sockets);
- ``async_``: the same GET as a route in the proxy runs it: the transaction's ops nursery
  (as ``ScriptHandlers.request`` opens it), ``req.async_(req.rest.get(url), resume=...,
  timeout=5)``, and the resume route (empty): the script machinery's share of a REST op;
- ``call``: ``await req.call(req.rest.get(url), timeout=5)`` in that nursery;
- ``httpx``: ``httpx.AsyncClient.get`` with the same pool bound, as the rest op did before
  (httpx -> httpcore -> anyio -> trio); skipped when httpx is not installed.

Usage, from the repository root::

    .venv/bin/python bench/bench_rest.py --requests 5000 --runs 3
    .venv/bin/python bench/bench_rest.py --clients triosip,async_ --requests 5000 --runs 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import trio

from triosip.ops import open_rest_client
from triosip.script import ScriptEnvironment
from triosip.script._context import _RouteContext
from triosip.testing.sipp import stop_process

BENCH = Path(__file__).resolve().parent


async def run_triosip(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    async with open_rest_client(max_connections=concurrency) as rest:
        return await _drive(lambda: rest.get(url).run(), requests, concurrency)


async def run_async(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    async with open_rest_client(max_connections=concurrency) as rest:
        environment = ScriptEnvironment(rest=rest)

        async def resume(req: _RouteContext) -> None:
            assert req.error is None, req.error

        async def transaction() -> None:
            async with trio.open_nursery() as ops:
                req = _RouteContext({}, environment, ops, "bench")
                req.async_(req.rest.get(url), resume=resume, timeout=5)

        return await _drive(transaction, requests, concurrency)


async def run_call(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    async with open_rest_client(max_connections=concurrency) as rest:
        environment = ScriptEnvironment(rest=rest)

        async def transaction() -> None:
            async with trio.open_nursery() as ops:
                req = _RouteContext({}, environment, ops, "bench")
                await req.call(req.rest.get(url), timeout=5)

        return await _drive(transaction, requests, concurrency)


async def run_httpx(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
        return await _drive(lambda: client.get(url), requests, concurrency)


async def _drive(send, requests: int, concurrency: int) -> tuple[float, float]:
    """CPU seconds per request (all, in the kernel), after a warm-up request per task."""
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(send)
    left = requests
    started = os.times()

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await send()

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    ended = os.times()
    user = ended.user - started.user
    system = ended.system - started.system
    return (user + system) / requests, system / requests


async def main(args: argparse.Namespace) -> None:
    every = {"triosip": run_triosip, "async_": run_async, "call": run_call, "httpx": run_httpx}
    clients = {name: every[name] for name in args.clients.split(",")}
    try:
        import httpx  # noqa: F401
    except ImportError:
        if clients.pop("httpx", None) is not None:
            print("httpx is not installed: its client is skipped")
    process = await trio.lowlevel.open_process(
        [sys.executable, str(BENCH / "bench_async.py"), "--serve-http", "0"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(10):
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some(64)
        url = f"http://127.0.0.1:{int(line)}/wait"
        best: dict[str, list[float]] = {name: [] for name in clients}
        for run in range(args.runs):
            for name, client in clients.items():
                with trio.fail_after(120):
                    cpu, system = await client(url, args.requests, args.concurrency)
                best[name].append(cpu)
                print(
                    f"run {run + 1}: {name:8} {cpu * 1e6:7.1f} µs CPU per request "
                    f"({system * 1e6:.1f} of them in the kernel)",
                    flush=True,
                )
        print(
            f"\n{args.requests} GETs per run, {args.concurrency} concurrent, keep-alive, "
            f"best of {args.runs}:"
        )
        for name, figures in best.items():
            print(f"  {name:8} {min(figures) * 1e6:7.1f} µs CPU per request")
    finally:
        await stop_process(process, process_group=True, grace=2.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="GETs per run")
    parser.add_argument("--concurrency", type=int, default=50, help="tasks sending at once")
    parser.add_argument("--runs", type=int, default=3, help="runs per client (best of)")
    parser.add_argument(
        "--clients",
        default="triosip,async_,call,httpx",
        help="comma-separated: triosip, async_, call, httpx (default: all)",
    )
    trio.run(main, parser.parse_args())
