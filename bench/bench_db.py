"""The db op's cost per query on sqlite and on PostgreSQL, in one run.

For each backend, ``--queries`` lookups one after the other (the subscribers lookup of
routes/opensips_async.py: ``SELECT setid FROM subscribers WHERE username = ?``, on a table
of ``--rows`` rows), then the same number with ``--concurrency`` at once. Prints the
latency per query (p50, p99, as the route sees it: op start to result) and this process's
CPU per query (time.process_time: the proxy's share; PostgreSQL's own backend CPU is in
its processes, and is given apart from /proc). The PostgreSQL server is a throwaway one
(triosip.testing.postgres), on 127.0.0.1, unless ``--pg-url`` names one.

The call rate with one lookup per INVITE, as a share of the rate without, is
bench_async.py's ``--modes none,sqlite,postgres``.

Usage, from the repository root::

    .venv/bin/python bench/bench_db.py --queries 5000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg
import trio

from triosip.ops import Database, open_database
from triosip.testing.postgres import PostgresServer

LOOKUP = "SELECT setid FROM subscribers WHERE username = ?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--pg-url", help="an existing server (else a throwaway one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="triosip-bench-db-") as folder:
        urls = {"sqlite": f"sqlite:///{Path(folder) / 'bench.db'}"}
        server = None
        if args.pg_url:
            urls["postgres"] = args.pg_url
        else:
            # A folder of its own: the server's user must reach it.
            server = PostgresServer(Path(tempfile.mkdtemp(prefix="triosip-bench-pg-")))
            server.start()
            urls["postgres"] = server.url
        try:
            print(f"{args.queries} lookups on {args.rows} rows; CPU = this process's\n")
            print("| backend | mode | queries/s | p50 ms | p99 ms | CPU µs/query |")
            print("|---|---|---|---|---|---|")
            for backend, url in urls.items():
                trio.run(bench, backend, url, args)
            # The reference: asyncpg alone on plain asyncio, no trio, no pool of ours: what
            # the trio-asyncio bridge and the op machinery add per query.
            asyncio.run(bench_asyncpg(urls["postgres"], args.queries))
        finally:
            if server is not None:
                server.stop("immediate")
                shutil.rmtree(server.data, ignore_errors=True)


async def bench(backend: str, url: str, args: argparse.Namespace) -> None:
    async with open_database(url, readers=args.concurrency) as db:
        await seed(db, args.rows)
        await run(db, backend, "sequential", args.queries, 1)
        await run(db, backend, f"{args.concurrency} at once", args.queries, args.concurrency)


async def bench_asyncpg(url: str, queries: int) -> None:
    connection = await asyncpg.connect(url)
    try:
        sql = LOOKUP.replace("?", "$1")
        for _ in range(100):
            await connection.fetch(sql, "user1")
        latencies = []
        cpu, wall = time.process_time(), time.perf_counter()
        for n in range(queries):
            start = time.perf_counter()
            await connection.fetch(sql, f"user{n % 10000}")
            latencies.append(time.perf_counter() - start)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await connection.close()
    report("asyncpg on asyncio (reference)", "sequential", queries, wall, cpu, latencies)


def report(
    backend: str, mode: str, queries: int, wall: float, cpu: float, latencies: list[float]
) -> None:
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    print(
        f"| {backend} | {mode} | {queries / wall:,.0f} | {p50:.2f} | {p99:.2f} | "
        f"{cpu / queries * 1e6:.0f} |"
    )


async def seed(db: Database, rows: int) -> None:
    await db.execute("DROP TABLE IF EXISTS subscribers")
    await db.execute("CREATE TABLE subscribers (username text PRIMARY KEY, setid int NOT NULL)")
    for start in range(0, rows, 500):
        values = ", ".join("(?, ?)" for _ in range(start, min(rows, start + 500)))
        params: list[object] = []
        for n in range(start, min(rows, start + 500)):
            params += [f"user{n}", n % 10]
        await db.execute(f"INSERT INTO subscribers VALUES {values}", params)


async def run(db: Database, backend: str, mode: str, queries: int, concurrency: int) -> None:
    latencies: list[float] = []
    names = [f"user{n}" for n in range(queries)]

    async def worker(offset: int) -> None:
        for n in range(offset, queries, concurrency):
            start = time.perf_counter()
            rows = await db.query(LOOKUP, [names[n] if n < 10000 else "user1"])
            latencies.append(time.perf_counter() - start)
            assert len(rows) <= 1

    for _ in range(100):  # warm up: statement caches, connections
        await db.query(LOOKUP, ["user1"])
    cpu, wall = time.process_time(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for offset in range(concurrency):
            nursery.start_soon(worker, offset)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    report(backend, mode, queries, wall, cpu, latencies)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
