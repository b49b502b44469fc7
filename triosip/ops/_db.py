"""The ``db`` op: an embedded sqlite database through sqlite-utils, cancellable for real.

Theory of operation. sqlite is a blocking C library, so each statement runs in a worker thread
(`trio.to_thread.run_sync`) on a connection taken from a small pool: ``readers`` connections
for `Database.query` (``PRAGMA query_only``, so a query can't write), and ONE writer
connection for `Database.execute` (sqlite has one writer at a time anyway). WAL journaling
lets the readers read while the writer writes.

A cancel (a transaction timer, a CANCEL, an op timeout) calls ``Connection.interrupt()``: the
running statement stops with SQLITE_INTERRUPT, and its transaction is rolled back. The caller
then waits, shielded, until the worker thread has returned (`run_in_worker_thread`), and only
then puts the connection back: a connection is never handed out while a thread still uses it,
and no thread outlives the transaction that started it (docs/cancellation.md, promises 1 and 2).

sqlite's busy handler can't be interrupted (``sqlite3_interrupt`` does not end a busy wait),
so the writer does not sleep in it: it runs with ``busy_timeout = 0``, tries ``BEGIN
IMMEDIATE``, and when another process holds the write lock it waits in trio (cancellable) and
tries again, for up to ``busy_timeout`` seconds.

The interface is driver-neutral (SQL text and parameters in, rows as dicts out) so that a
PostgreSQL `Database` can follow with the same methods.
"""

from __future__ import annotations

import abc
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import sqlite_utils
import trio

from triosip.errors import TriosipError
from triosip.ops._base import Op, OpFailed
from triosip.ops._threads import WorkerGate, run_in_worker_thread

logger = logging.getLogger(__name__)

# How long a statement may wait for a lock held by another connection or process, in seconds.
BUSY_TIMEOUT = 2.0
# The first and the longest pause between two tries of the writer to take the write lock.
_LOCK_RETRY_FIRST = 0.001
_LOCK_RETRY_MAX = 0.05

_URL_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres")
_URL_HELP = (
    "use sqlite:///relative/path.db, sqlite:////absolute/path.db or "
    "postgresql://USER@HOST:PORT/DATABASE"
)

# Statements execute() refuses: it runs each statement in a transaction of its own.
_TRANSACTION_KEYWORDS = frozenset({"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"})


class DatabaseError(TriosipError):
    """The database refused us at start: a wrong user or password, an unknown database."""


Params: TypeAlias = Sequence[Any] | Mapping[str, Any]
T = TypeVar("T")


def database_path(url: str) -> Path | None:
    """Check a database URL; the file a ``sqlite:///`` URL names, as SQLAlchemy spells them.

    Args:
        url: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, or
            ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`` (or ``postgres://``).

    Returns:
        The sqlite file, relative to the working directory or absolute; None for PostgreSQL.

    Raises:
        ValueError: another scheme, a malformed URL, an in-memory sqlite database or sqlite
            URL options.
    """
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValueError(f"database URL {url!r} is not a URL: {_URL_HELP}")
    if scheme in POSTGRES_SCHEMES:
        check_postgres_url(url)
        return None
    if scheme != "sqlite":
        raise ValueError(f"database URL {url!r}: {scheme!r} is not supported; {_URL_HELP}")
    if not url.startswith(_URL_PREFIX):
        raise ValueError(f"database URL {url!r} has a host part or too few slashes; {_URL_HELP}")
    path = url.removeprefix(_URL_PREFIX)
    if not path or path.endswith("/"):
        raise ValueError(f"database URL {url!r} names no file; {_URL_HELP}")
    if path == ":memory:" or "?" in path:
        # An in-memory database is private to one connection; the pool needs a file.
        raise ValueError(
            f"database URL {url!r}: in-memory databases and URL options are "
            f"not supported; {_URL_HELP}"
        )
    return Path(path)


def is_postgres_url(url: str) -> bool:
    """Whether `url` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return url.partition("://")[0] in POSTGRES_SCHEMES


def check_postgres_url(url: str) -> None:
    """Check a ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…]`` URL.

    Raises:
        ValueError: it has no database name, or its port is not a number.
    """
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (urlsplit checks the port when asked for it)
    except ValueError as exc:
        raise ValueError(f"database URL {redact(url)!r}: {exc}") from None
    if not parts.path.strip("/"):
        raise ValueError(
            f"database URL {redact(url)!r} names no database: "
            "use postgresql://USER@HOST:PORT/DATABASE"
        )


def redact(url: str) -> str:
    """`url` without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseStatistics:
    """A snapshot of a `Database`'s pool and counters.

    Attributes:
        readers_busy: reader connections in use (a thread may be finishing on them).
        readers_idle: reader connections ready for a query.
        readers_waiting: queries waiting for a reader.
        writer_busy: whether the writer connection is in use.
        writers_waiting: writes waiting for the writer.
        queries_done: queries and writes that returned a result.
        queries_failed: those that raised `OpFailed`.
        queries_cancelled: those that were cancelled (interrupted, or never started).
    """

    readers_busy: int
    readers_idle: int
    readers_waiting: int
    writer_busy: bool
    writers_waiting: int
    queries_done: int
    queries_failed: int
    queries_cancelled: int


class Database(abc.ABC):
    """A pooled database whose queries and writes are ops; made by `open_database`.

    The same methods on every backend (sqlite, PostgreSQL): SQL text and parameters in, rows
    as dicts out. Parameters are written ``?`` (a sequence) or ``:name`` (a mapping) on both;
    the PostgreSQL backend turns them into its own ``$1``.

    Attributes:
        url: the URL it was opened with (without its password).
    """

    def __init__(self, *, url: str) -> None:
        self.url = url
        self._closed = False
        self._outcomes = {"done": 0, "failed": 0, "cancelled": 0}

    def query(self, sql: str, params: Params = ()) -> Op[list[dict[str, Any]]]:
        """An op that runs a query on a reader connection and returns its rows.

        Args:
            sql: one SQL statement that returns rows (``SELECT``, ``WITH``, a ``PRAGMA``).
            params: ``?`` parameters as a sequence, or ``:name`` parameters as a mapping.

        Returns:
            An op (kind ``"db"``, described by ``sql``) whose result is the rows, as dicts
            from column name to value.

        Raises:
            OpFailed: (when run) an SQL error, a statement that returns no rows or that tries
                to write, a lost or unreachable server, or a closed database.
        """
        return Op("db", sql, lambda: self._counted(sql, self._query, params))

    def execute(self, sql: str, params: Params = ()) -> Op[int]:
        """An op that runs one writing statement on a writer connection and commits it.

        The statement runs in a transaction of its own, so it is all or nothing, and other
        processes see all of it or none of it.

        What a script may assume about a **cancelled** write: it either left the database
        unchanged or committed in full — never in part — and the script can't tell which,
        because it gets `trio.Cancelled` (or `OpTimeout`) either way:

        - cancelled while it waited for a writer connection, or (sqlite) for the write lock
          another process held: nothing was written;
        - cancelled while its statement ran: the statement is interrupted (sqlite) or
          cancelled on the server (PostgreSQL), and its transaction rolled back;
        - cancelled after its statement had completed: it is past its point of no return,
          the commit is never interrupted, and the write commits (sqlite waits for the
          commit, so it is durable when the cancel returns).

        So re-read when the outcome matters, and prefer writes that can be run twice
        (``INSERT OR REPLACE`` / ``ON CONFLICT``, ``UPDATE … SET x = ?``).

        Args:
            sql: one SQL statement (``INSERT``, ``UPDATE``, ``DELETE``, ``CREATE …``); not
                ``BEGIN``/``COMMIT``/``ROLLBACK``/``SAVEPOINT``, and not ``VACUUM``.
            params: ``?`` parameters as a sequence, or ``:name`` parameters as a mapping.

        Returns:
            An op (kind ``"db"``, described by ``sql``) whose result is the number of rows
            the statement changed (-1 for ``CREATE TABLE`` and other statements that change
            no rows).

        Raises:
            OpFailed: (when run) an SQL error or constraint violation, (sqlite) the write lock
                still held by another process after ``busy_timeout``, a lost or unreachable
                server, or a closed database.
        """
        return Op("db", sql, lambda: self._counted(sql, self._checked_execute, params))

    @abc.abstractmethod
    def statistics(self) -> DatabaseStatistics:
        """A snapshot of the pool and of the counters of finished queries.

        Returns:
            The snapshot.
        """

    @abc.abstractmethod
    async def _query(self, sql: str, params: Params) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def _execute(self, sql: str, params: Params) -> int: ...

    async def _checked_execute(self, sql: str, params: Params) -> int:
        keyword = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if keyword in _TRANSACTION_KEYWORDS or keyword == "VACUUM":
            raise OpFailed(
                "db",
                sql,
                f"{keyword} is not allowed: execute() runs each "
                "statement in a transaction of its own",
            )
        return await self._execute(sql, params)

    async def _counted(
        self, sql: str, run: Callable[[str, Params], Awaitable[T]], params: Params
    ) -> T:
        outcome: Literal["done", "failed", "cancelled"] = "cancelled"
        try:
            if self._closed:
                raise OpFailed("db", sql, f"database {self.url} is closed")
            result = await run(sql, params)
            outcome = "done"
            return result
        except OpFailed:
            outcome = "failed"
            raise
        finally:
            self._outcomes[outcome] += 1

    def _statistics(
        self,
        readers: trio.CapacityLimiterStatistics,
        idle: int,
        writer: trio.CapacityLimiterStatistics,
    ) -> DatabaseStatistics:
        return DatabaseStatistics(
            readers_busy=readers.borrowed_tokens,
            readers_idle=idle,
            readers_waiting=readers.tasks_waiting,
            writer_busy=writer.borrowed_tokens > 0,
            writers_waiting=writer.tasks_waiting,
            queries_done=self._outcomes["done"],
            queries_failed=self._outcomes["failed"],
            queries_cancelled=self._outcomes["cancelled"],
        )


class SqliteDatabase(Database):
    """The sqlite backend (see the module doc).

    Attributes:
        path: the database file.
    """

    def __init__(
        self,
        *,
        path: Path,
        readers: list[sqlite_utils.Database],
        writer: sqlite_utils.Database,
        busy_timeout: float,
    ) -> None:
        super().__init__(url=f"{_URL_PREFIX}{path}")
        self.path = path
        self._idle_readers = readers
        self._reader_slots = trio.CapacityLimiter(len(readers))
        self._writer = writer
        self._writer_slot = trio.CapacityLimiter(1)
        self._busy_timeout = busy_timeout

    def statistics(self) -> DatabaseStatistics:
        """A snapshot of the pool and of the counters of finished queries.

        Returns:
            The snapshot.
        """
        return self._statistics(
            self._reader_slots.statistics(),
            len(self._idle_readers),
            self._writer_slot.statistics(),
        )

    async def _query(self, sql: str, params: Params) -> list[dict[str, Any]]:
        async with self._reader_slots:
            reader = self._idle_readers.pop()
            try:
                return await run_in_worker_thread(
                    lambda gate: _read(gate, reader, sql, params),
                    interrupt=reader.conn.interrupt,
                    thread_name="triosip db reader",
                    limiter=None,  # the reader slots bound the threads
                )
            except (sqlite3.Error, ValueError) as exc:
                raise OpFailed("db", sql, str(exc)) from exc
            finally:
                # run_in_worker_thread returns only once the thread is done with it.
                self._idle_readers.append(reader)

    async def _execute(self, sql: str, params: Params) -> int:
        async with self._writer_slot:
            return await self._write_when_unlocked(sql, params)

    async def _write_when_unlocked(self, sql: str, params: Params) -> int:
        deadline = trio.current_time() + self._busy_timeout
        pause = _LOCK_RETRY_FIRST
        while True:
            try:
                rowcount = await run_in_worker_thread(
                    lambda gate: _write(gate, self._writer, sql, params),
                    interrupt=self._writer.conn.interrupt,
                    thread_name="triosip db writer",
                    limiter=None,  # the writer slot bounds the threads
                )
            except sqlite3.Error as exc:
                raise OpFailed("db", sql, str(exc)) from exc
            if rowcount is not None:
                return rowcount
            # Another process holds the write lock: wait here, where a cancel can reach us,
            # rather than in sqlite's busy handler, where it can't.
            if trio.current_time() >= deadline:
                raise OpFailed(
                    "db",
                    sql,
                    f"database is locked (waited {self._busy_timeout:g} s for the write lock)",
                )
            await trio.sleep(pause)
            pause = min(pause * 2, _LOCK_RETRY_MAX)

    def _connections(self) -> list[sqlite_utils.Database]:
        return [*self._idle_readers, self._writer]


def _read(
    gate: WorkerGate, reader: sqlite_utils.Database, sql: str, params: Params
) -> list[dict[str, Any]]:
    """In a worker thread: run a query and fetch every row."""
    try:
        return list(reader.query(sql, _sqlite_params(params)))
    finally:
        # sqlite-utils wraps the query in a savepoint; if an interrupt cut its cleanup short,
        # end the read transaction here, or the connection would pin an old snapshot.
        if reader.conn.in_transaction:
            gate.settle()
            reader.conn.execute("ROLLBACK")


def _write(gate: WorkerGate, writer: sqlite_utils.Database, sql: str, params: Params) -> int | None:
    """In a worker thread: one statement in its own transaction; None if the lock is taken."""
    conn = writer.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
            return None
        raise
    committed = False
    try:
        cursor = writer.execute(sql, _sqlite_params(params))
        cursor.fetchall()  # an INSERT … RETURNING runs until its rows are read
        rowcount: int = cursor.rowcount
        # The point of no return: from here on no interrupt is delivered, so that a cancel
        # can't cut the COMMIT short (see Database.execute).
        gate.settle()
        conn.execute("COMMIT")
        committed = True
        return rowcount
    finally:
        if not committed and conn.in_transaction:
            # An interrupted statement may already have rolled its transaction back.
            gate.settle()
            conn.execute("ROLLBACK")


def _sqlite_params(params: Params) -> Sequence[Any] | dict[str, Any]:
    return dict(params) if isinstance(params, Mapping) else params


def _connect(path: Path, *, busy_timeout: float, reader: bool) -> sqlite_utils.Database:
    # isolation_level=None: no implicit BEGIN from the sqlite3 module; we say when.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        database = sqlite_utils.Database(conn, execute_plugins=False)
        if reader:
            conn.execute("PRAGMA query_only = ON")
        else:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode != "wal":
                logger.warning("database %s: journal mode is %s, not wal", path, mode)
            # The writer waits for the write lock in trio, not in sqlite (see module doc).
            conn.execute("PRAGMA busy_timeout = 0")
    except BaseException:
        conn.close()
        raise
    return database


def _connect_all(path: Path, *, readers: int, busy_timeout: float) -> SqliteDatabase:
    opened: list[sqlite_utils.Database] = []
    try:
        # The writer first: it creates the file and switches it to WAL.
        writer = _connect(path, busy_timeout=busy_timeout, reader=False)
        opened.append(writer)
        opened.extend(
            _connect(path, busy_timeout=busy_timeout, reader=True) for _ in range(readers)
        )
    except BaseException:
        for database in opened:
            database.conn.close()
        raise
    return SqliteDatabase(path=path, readers=opened[1:], writer=writer, busy_timeout=busy_timeout)


def _close_all(database: SqliteDatabase) -> None:
    for connection in database._connections():
        connection.conn.close()


@asynccontextmanager
async def open_database(
    url: str, *, readers: int = 4, writers: int = 2, busy_timeout: float = BUSY_TIMEOUT
) -> AsyncIterator[Database]:
    """Open a database with a pool of connections, and close them all at the end.

    The block owns the connections: run the database's ops in nurseries inside it, so that
    they have all finished when it ends.

    sqlite: the file is created if it does not exist, and put in WAL mode; one writer.

    PostgreSQL: asyncpg on the process's asyncio loop (trio-asyncio); the URL takes what
    libpq's does (``?sslmode=``, a password from the URL, ``PGPASSWORD`` or ``~/.pgpass``).
    A server that is down at start is logged, and each op fails with `OpFailed` until it is
    back; a server that refuses us raises `DatabaseError`.

    Args:
        url: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, or
            ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`` (or ``postgres://``).
        readers: how many queries may run at once (one connection each; on sqlite one
            thread each too).
        writers: how many writes may run at once on PostgreSQL (sqlite has one writer).
        busy_timeout: (sqlite) how long a statement waits for a lock another process holds,
            in seconds. A query waiting for such a lock (rare in WAL mode) can't be
            interrupted before it ends; a write waits in trio, and stops at once when
            cancelled.

    Yields:
        The `Database`.

    Raises:
        ValueError: the URL is not one of the above, or ``readers < 1``.
        sqlite3.Error: the file can't be opened as a database.
        DatabaseError: the PostgreSQL server refused the user, password or database.
    """
    if is_postgres_url(url):
        # Here, not at the top: _postgres imports this module.
        from triosip.ops._postgres import open_postgres

        async with open_postgres(url, pool=readers, writers=writers) as database:
            yield database
        return
    path = database_path(url)
    assert path is not None
    if readers < 1:
        raise ValueError(f"readers must be at least 1, not {readers}")
    sqlite = await trio.to_thread.run_sync(
        lambda: _connect_all(path, readers=readers, busy_timeout=busy_timeout)
    )
    logger.debug("database %s opened: %d readers, 1 writer", path, readers)
    try:
        yield sqlite
    finally:
        sqlite._closed = True
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_close_all, sqlite)
        logger.debug("database %s closed", path)
