"""The ``db`` op on real sqlite files: results, errors, the pool, and cancellation for real."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.ops import LONG_QUERY, wait_until
from triosip.ops import Op, OpFailed, OpTimeout, database_path, open_database, run_with_timeout
from triosip.testing.leaks import triosip_threads

# The long query, as a write: it would insert ten million rows (seconds).
LONG_INSERT = (
    "INSERT INTO t (x) SELECT x FROM (WITH RECURSIVE c(x) AS "
    "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000) SELECT x FROM c)"
)


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "triosip.db"


@pytest.fixture
def db_url(db_file: Path) -> str:
    return f"sqlite:///{db_file}"  # an absolute path: sqlite:////tmp/...


def _rows_seen_by_another_connection(db_file: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db_file) as other:
        rows = other.execute(sql).fetchall()
    other.close()
    return rows


def _fds_on(db_file: Path) -> list[str]:
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith(str(db_file)):
            targets.append(target)
    return targets


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///relative/x.db", Path("relative/x.db")),
        ("sqlite:///x.db", Path("x.db")),
        ("sqlite:////var/lib/triosip/x.db", Path("/var/lib/triosip/x.db")),
    ],
)
def test_database_path(url: str, path: Path) -> None:
    assert database_path(url) == path


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://db.example.com/triosip", "'mysql' is not supported"),
        ("triosip.db", "is not a URL"),
        ("sqlite://triosip.db", "has a host part or too few slashes"),
        ("sqlite:///", "names no file"),
        ("sqlite:////var/lib/", "names no file"),
        ("sqlite:///:memory:", "in-memory databases"),
        ("sqlite:///x.db?mode=ro", "URL options"),
    ],
)
def test_database_path_refuses(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        database_path(url)
    assert "sqlite:///relative/path.db" in str(caught.value)  # says what to write instead


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://triosip@db.example.com:5432/triosip",
        "postgres://db.example.com/x?sslmode=require",
    ],
)
def test_database_path_takes_postgres_urls(url: str) -> None:
    assert database_path(url) is None  # no file; the URL goes to the server as it is


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://db.example.com", "names no database"),
        ("postgresql://db.example.com:port/x", "Port could not be cast"),
    ],
)
def test_database_path_refuses_bad_postgres_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        database_path(url)


async def test_a_relative_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with trio.fail_after(5):
        async with open_database("sqlite:///sub.db", readers=1) as db:
            await db.execute("CREATE TABLE t (x)")
    assert (tmp_path / "sub.db").is_file()


async def test_writes_commit_and_queries_return_dicts(db_url: str, db_file: Path) -> None:
    with trio.fail_after(5):
        async with open_database(db_url) as db:
            assert await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)") == -1
            assert await db.execute("INSERT INTO t (name) VALUES (?), (?)", ["a", "b"]) == 2
            assert await db.execute("INSERT INTO t (name) VALUES ('c') RETURNING id") == 1
            assert await db.execute("DELETE FROM t WHERE name = 'c'") == 1
            assert (
                await db.execute("UPDATE t SET name = :name WHERE id = :id", {"id": 2, "name": "B"})
                == 1
            )
            # Committed: another connection, outside triosip, sees the rows.
            assert _rows_seen_by_another_connection(db_file, "SELECT name FROM t ORDER BY id") == [
                ("a",),
                ("B",),
            ]
            rows = await db.query("SELECT id, name FROM t WHERE id >= ? ORDER BY id", (1,))
            assert rows == [{"id": 1, "name": "a"}, {"id": 2, "name": "B"}]
            assert await db.query("SELECT * FROM t WHERE name = :n", {"n": "zz"}) == []
            assert await db.query("PRAGMA journal_mode") == [{"journal_mode": "wal"}]
            stats = db.statistics()
    assert stats.queries_done == 8
    assert (stats.queries_failed, stats.queries_cancelled) == (0, 0)
    assert (stats.readers_busy, stats.readers_idle, stats.writer_busy) == (0, 4, False)


async def test_sql_errors_are_op_failed(db_url: str) -> None:
    with trio.fail_after(5):
        async with open_database(db_url, readers=1) as db:
            await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            await db.execute("INSERT INTO t VALUES (1)")
            cases: list[tuple[Op[Any], str]] = [
                (db.query("SELECT * FROM nope"), "no such table: nope"),
                (db.query("SELEC 1"), "syntax error"),
                (db.query("SELECT ?", [1, 2]), "bindings"),
                (db.execute("INSERT INTO t VALUES (1)"), "UNIQUE constraint failed"),
                (db.execute("BEGIN"), "BEGIN is not allowed"),
                # A reader can't write, even with a statement that returns rows.
                (db.query("INSERT INTO t VALUES (2) RETURNING id"), "readonly"),
                (db.query("DELETE FROM t"), "readonly"),
            ]
            for op, message in cases:
                with pytest.raises(OpFailed, match=message) as caught:
                    await op
                assert caught.value.kind == "db"
                assert caught.value.description == op.description
            # Nothing was written by the failures, and both kinds of connection still work.
            assert await db.query("SELECT id FROM t") == [{"id": 1}]
            assert await db.execute("INSERT INTO t VALUES (2)") == 1
            assert db.statistics().queries_failed == len(cases)


async def test_a_cancelled_query_is_interrupted_and_its_connection_reused(db_url: str) -> None:
    with trio.fail_after(5):
        async with open_database(db_url, readers=1) as db:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(db.query(LONG_QUERY).run)
                    await wait_until(lambda: triosip_threads() == ["triosip db reader"])
                    # Let the statement run: the interrupt must stop a running statement.
                    await trio.sleep(0.05)
                    cancelled_at = trio.current_time()
                    scope.cancel()
            took = trio.current_time() - cancelled_at
            # The op returned only once its thread had: without interrupt() it would run for
            # minutes; abandoned, its thread would still be running here.
            assert took < 0.5
            assert triosip_threads() == []
            stats = db.statistics()
            assert (stats.readers_busy, stats.readers_idle, stats.queries_cancelled) == (0, 1, 1)
            # The only reader is back in the pool, and usable.
            assert await db.query("SELECT 1 AS one") == [{"one": 1}]


async def test_cancels_at_any_moment_leave_a_usable_pool(db_url: str) -> None:
    # Cancel after 0, 1, 2, ... checkpoints: before the connection is taken, before the thread
    # starts, before the statement starts, while it runs.
    with trio.fail_after(10):
        async with open_database(db_url, readers=1) as db:
            for checkpoints in range(30):
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(db.query(LONG_QUERY).run)
                        for _ in range(checkpoints):
                            await trio.lowlevel.checkpoint()
                        scope.cancel()
                assert triosip_threads() == []
            assert await db.query("SELECT 2 AS two") == [{"two": 2}]
            assert db.statistics().queries_cancelled == 30


async def test_a_cancelled_write_is_rolled_back(db_url: str, db_file: Path) -> None:
    with trio.fail_after(5):
        async with open_database(db_url, readers=1) as db:
            await db.execute("CREATE TABLE t (x INTEGER)")
            with trio.move_on_after(0.1) as scope:
                await db.execute(LONG_INSERT)
            assert scope.cancelled_caught
            assert triosip_threads() == []
            # Not one row of the interrupted INSERT was committed, and the writer is free.
            assert _rows_seen_by_another_connection(db_file, "SELECT count(*) FROM t") == [(0,)]
            assert await db.execute("INSERT INTO t VALUES (1)") == 1
            assert await db.query("SELECT x FROM t") == [{"x": 1}]


async def test_a_write_waiting_for_a_lock_is_cancelled_at_once(db_url: str, db_file: Path) -> None:
    # sqlite's busy handler can't be interrupted: waiting in it, the cancel would take the
    # whole busy_timeout (5 s here).
    with trio.fail_after(5):
        async with open_database(db_url, readers=1, busy_timeout=5) as db:
            await db.execute("CREATE TABLE t (x INTEGER)")
            other = sqlite3.connect(db_file, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(db.execute("INSERT INTO t VALUES (1)").run)
                        await wait_until(lambda: db.statistics().writer_busy)
                        await trio.sleep(0.05)
                        cancelled_at = trio.current_time()
                        scope.cancel()
                assert trio.current_time() - cancelled_at < 0.3
                other.execute("COMMIT")
            finally:
                other.close()
            # The lock is free now, and the cancelled write did not happen after all.
            await trio.sleep(0.05)
            assert await db.query("SELECT count(*) AS n FROM t") == [{"n": 0}]


async def test_a_write_waits_for_the_lock_then_commits(db_url: str, db_file: Path) -> None:
    with trio.fail_after(5):
        async with open_database(db_url, readers=1) as db:
            await db.execute("CREATE TABLE t (x INTEGER)")
            other = sqlite3.connect(db_file, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(db.execute("INSERT INTO t VALUES (1)").run)
                    await wait_until(lambda: db.statistics().writer_busy)
                    await trio.sleep(0.05)
                    other.execute("COMMIT")
            finally:
                other.close()
            assert await db.query("SELECT x FROM t") == [{"x": 1}]


async def test_a_write_gives_up_when_the_lock_stays_taken(db_url: str, db_file: Path) -> None:
    with trio.fail_after(5):
        async with open_database(db_url, readers=1, busy_timeout=0.2) as db:
            await db.execute("CREATE TABLE t (x INTEGER)")
            other = sqlite3.connect(db_file, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                started = trio.current_time()
                with pytest.raises(OpFailed, match=r"database is locked \(waited 0.2 s"):
                    await db.execute("INSERT INTO t VALUES (1)")
                assert 0.2 <= trio.current_time() - started < 1
            finally:
                other.close()


async def test_queries_are_bounded_by_the_readers(db_url: str) -> None:
    with trio.fail_after(5):
        async with open_database(db_url, readers=2) as db:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    for _ in range(5):
                        nursery.start_soon(db.query(LONG_QUERY).run)
                    await wait_until(lambda: len(triosip_threads()) == 2)
                    await trio.sleep(0.05)
                    stats = db.statistics()
                    assert (stats.readers_busy, stats.readers_idle) == (2, 0)
                    assert stats.readers_waiting == 3
                    # Two statements run side by side in two threads, no more.
                    assert triosip_threads() == ["triosip db reader"] * 2
                    # The writer has its own connection: a write is not held up by queries.
                    with trio.fail_after(1):
                        await db.execute("CREATE TABLE t (x)")
                    scope.cancel()
            assert triosip_threads() == []
            assert db.statistics().queries_cancelled == 5


async def test_closing_closes_every_connection(db_url: str, db_file: Path) -> None:
    with trio.fail_after(5):
        async with open_database(db_url, readers=3) as db:
            await db.execute("CREATE TABLE t (x)")
            for _ in range(3):
                await db.query("SELECT * FROM t")
            # Each of the 4 connections holds the file (and the WAL, and its index) open.
            assert len([fd for fd in _fds_on(db_file) if fd == str(db_file)]) == 4
        assert _fds_on(db_file) == []
        with pytest.raises(OpFailed, match="is closed"):
            await db.query("SELECT * FROM t")


async def test_run_with_timeout_interrupts_a_query(db_url: str) -> None:
    with trio.fail_after(5):
        async with open_database(db_url, readers=1) as db:
            with pytest.raises(OpTimeout, match=r"timed out after 0\.1 s"):
                await run_with_timeout(db.query(LONG_QUERY), 0.1)
            assert triosip_threads() == []
            assert db.statistics().queries_cancelled == 1


async def test_open_database_refuses_a_bad_pool_size(db_url: str) -> None:
    with pytest.raises(ValueError, match="readers must be at least 1"):
        async with open_database(db_url, readers=0):
            pass
