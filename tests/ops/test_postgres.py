"""The ``db`` op on a real PostgreSQL server: results, errors, parameters, the pool, a cancel
seen from the server's side, a server down or restarted, a refused login."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
import trio

from triosip.ops import DatabaseError, Op, OpFailed, open_database
from triosip.ops._postgres import translate
from triosip.testing.leaks import wait_until
from triosip.testing.postgres import running, shared_server, sleep_sql, wait_running


def _table() -> str:
    """A table name of its own for each test: they share one server."""
    return f"t_{os.urandom(4).hex()}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("sql", "params", "expected"),
    [
        ("SELECT ?, ?", [1, 2], ("SELECT $1, $2", [1, 2])),
        ("SELECT :b, :a, :b", {"a": 1, "b": 2}, ("SELECT $1, $2, $1", [2, 1])),
        # Not parameters: literals, quoted names, comments, casts.
        (
            "SELECT '?', 'it''s :x', \"?\", ?::int -- ?\n/* :y */",
            [5],
            ("SELECT '?', 'it''s :x', \"?\", $1::int -- ?\n/* :y */", [5]),
        ),
        ("SELECT $1::text", ["as is"], ("SELECT $1::text", ["as is"])),
    ],
)
def test_question_marks_and_names_become_dollar_parameters(
    sql: str, params: Any, expected: tuple[str, list[Any]]
) -> None:
    assert translate(sql, params) == expected


async def test_writes_commit_and_queries_return_dicts(pg_url: str) -> None:
    t = _table()
    with trio.fail_after(10):
        async with open_database(pg_url) as db, open_database(pg_url) as other:
            assert await db.execute(f"CREATE TABLE {t} (id serial PRIMARY KEY, name text)") == -1
            assert await db.execute(f"INSERT INTO {t} (name) VALUES (?), (?)", ["a", "b"]) == 2
            assert await db.execute(f"DELETE FROM {t} WHERE name = 'b'") == 1
            changed = await db.execute(
                f"UPDATE {t} SET name = :name WHERE id = :id", {"id": 1, "name": "A"}
            )
            assert changed == 1
            # Committed: another pool sees it.
            assert await other.query(f"SELECT id, name FROM {t} WHERE id >= ?", [1]) == [
                {"id": 1, "name": "A"}
            ]
            await db.execute(f"DROP TABLE {t}")
            stats = db.statistics()
    assert (stats.queries_done, stats.queries_failed, stats.queries_cancelled) == (5, 0, 0)
    assert (stats.readers_busy, stats.readers_idle, stats.writer_busy) == (0, 4, False)


async def test_sql_errors_are_op_failed(pg_url: str) -> None:
    t = _table()
    with trio.fail_after(10):
        async with open_database(pg_url, readers=1, writers=1) as db:
            await db.execute(f"CREATE TABLE {t} (id int PRIMARY KEY)")
            await db.execute(f"INSERT INTO {t} VALUES (1)")
            cases: list[tuple[Op[Any], str]] = [
                (db.query("SELECT * FROM nope"), 'relation "nope" does not exist'),
                (db.query("SELEC 1"), "syntax error"),
                (db.query("SELECT ?::int", [1, 2]), "expects 1 argument"),
                (db.query("SELECT :a::int", [1]), "sequence of values"),
                (db.execute(f"INSERT INTO {t} VALUES (1)"), "duplicate key"),
                (db.execute("BEGIN"), "BEGIN is not allowed"),
                # A reader can't write, even with a statement that returns rows.
                (db.query(f"INSERT INTO {t} VALUES (2) RETURNING id"), "read-only transaction"),
            ]
            for op, message in cases:
                with pytest.raises(OpFailed, match=message) as caught:
                    await op
                assert caught.value.kind == "db"
            assert await db.query(f"SELECT id FROM {t}") == [{"id": 1}]
            assert await db.execute(f"DROP TABLE {t}") == -1
            assert db.statistics().queries_failed == len(cases)


@pytest.mark.parametrize("kind", ["query", "execute"])
async def test_a_cancel_ends_the_statement_on_the_server_at_once(pg_url: str, kind: str) -> None:
    marker = f"cancel-{os.urandom(4).hex()}"
    t = _table()
    with trio.fail_after(10):
        async with open_database(pg_url, readers=1, writers=1) as db, open_database(pg_url) as mon:
            await db.execute(f"CREATE TABLE {t} (x int)")
            op = (
                db.query(sleep_sql(marker))
                if kind == "query"
                else db.execute(f"INSERT INTO {t} SELECT 1 FROM pg_sleep(30) /* {marker} */")
            )
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(op.run)
                    await wait_running(mon, marker, 1)
                    cancelled_at = trio.current_time()
                    scope.cancel()
            # The op returned once the server had ended the statement: not a moment later
            # does pg_stat_activity show it (it would run 30 s if only abandoned).
            assert await running(mon, marker) == 0
            assert trio.current_time() - cancelled_at < 0.1
            stats = db.statistics()
            assert (stats.readers_busy, stats.writer_busy, stats.queries_cancelled) == (0, False, 1)
            # The same connections, clean: the write was rolled back, both pools serve.
            assert await db.query(f"SELECT count(*) AS n FROM {t}") == [{"n": 0}]
            assert await db.execute(f"DROP TABLE {t}") == -1


async def test_cancels_at_any_moment_leave_a_usable_pool(pg_url: str) -> None:
    # Cancel after 0, 1, 2, ... checkpoints: before the connection is taken, while it
    # connects, while the statement is sent, while it runs.
    with trio.fail_after(20):
        async with open_database(pg_url, readers=1) as db:
            for checkpoints in range(0, 60, 3):
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(db.query(sleep_sql("any-moment")).run)
                        for _ in range(checkpoints):
                            await trio.lowlevel.checkpoint()
                        scope.cancel()
                assert db.statistics().readers_busy == 0
            assert await db.query("SELECT 2 AS two") == [{"two": 2}]
            assert db.statistics().queries_cancelled == 20


async def test_queries_are_bounded_by_the_pool(pg_url: str) -> None:
    marker = f"bounded-{os.urandom(4).hex()}"
    with trio.fail_after(10):
        async with open_database(pg_url, readers=2) as db, open_database(pg_url) as mon:
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(db.query(sleep_sql(marker)).run)
                await wait_until(lambda: db.statistics().readers_waiting == 3)
                await wait_running(mon, marker, 2)
                nursery.cancel_scope.cancel()
            assert await running(mon, marker) == 0


async def test_a_server_down_at_start_fails_each_op(pg_url: str) -> None:
    # We choose to start, not to exit: each op fails with OpFailed until the server is up.
    url = f"postgresql://nobody@127.0.0.1:{_free_port()}/db"
    with trio.fail_after(10):
        async with open_database(url, readers=1) as db:
            with pytest.raises(OpFailed, match="cannot connect: Connection refused"):
                await db.query("SELECT 1")
            assert db.statistics().readers_idle == 1


async def test_a_wrong_password_is_refused_at_start(pg_url: str) -> None:
    url = pg_url.replace(":triosip-test@", ":wrong@")
    with trio.fail_after(10), pytest.raises(DatabaseError) as caught:
        async with open_database(url):
            pass
    message = str(caught.value)
    assert "password authentication failed" in message
    assert "wrong" not in message  # the password is not shown
    assert "\n" not in message  # one line, for the CLI


async def test_a_restarted_server_fails_the_ops_in_flight_and_the_pool_recovers(
    pg_url: str,
) -> None:
    server = shared_server()
    with trio.fail_after(30):
        async with open_database(pg_url, readers=2) as db:
            assert await db.query("SELECT 1 AS one") == [{"one": 1}]
            failures: list[OpFailed] = []

            async def pending() -> None:
                try:
                    await db.query(sleep_sql("restart"))
                except OpFailed as exc:
                    failures.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pending)
                await wait_until(lambda: db.statistics().readers_busy == 1)
                await trio.sleep(0.1)
                await trio.to_thread.run_sync(server.restart)
            assert len(failures) == 1
            assert "connection" in str(failures[0]) or "terminat" in str(failures[0])
            # No proxy restart: the next ops open new connections.
            assert await db.query("SELECT 1 AS one") == [{"one": 1}]
            assert await db.query("SELECT 2 AS two") == [{"two": 2}]
