"""The ``db`` op on PostgreSQL: asyncpg on the process's asyncio loop, cancelled on the server.

Theory of operation. asyncpg is the fastest PostgreSQL driver for Python, and it is asyncio-
only; trio-asyncio runs one asyncio loop inside trio for the whole process, and each
statement runs on it as an asyncio task that trio awaits (`run_aio_coroutine`). A trio
cancel (a transaction timer, a CANCEL, an op timeout, a shutdown) cancels that task, and
asyncpg then sends PostgreSQL a cancel request (a second connection carrying the backend's
key), as ``psql``'s Ctrl-C does: the server stops the statement and rolls its transaction
back.

The pool is ours, not asyncpg's, so that it keeps the sqlite backend's rules: ``pool``
reader connections (each opened ``default_transaction_read_only``, so a query can't write)
and ``writers`` writer connections, each behind a `trio.CapacityLimiter`; all open at start
(or, if the server is down then, on demand), and one that the server closed (a restart) is
dropped and replaced by the next op. A connection whose op did not end cleanly (cancelled,
failed) is settled before it goes back, shielded and bounded: ``ROLLBACK`` waits until the
server has ended the cancelled statement (asyncpg holds every command until its cancel
request is answered), so the connection is never handed out mid-query; one that can't be
settled in `SETTLE_TIMEOUT` is closed instead.

Parameters: scripts write ``?`` (or ``:name`` with a mapping), as on sqlite; `translate`
turns them into PostgreSQL's ``$1``, outside string literals, quoted names and comments. SQL
that already uses ``$1`` and no ``?`` passes unchanged.

A server that is down at start is not fatal: the proxy starts, each op fails with `OpFailed`
until the server is back, and the pool then recovers by itself. A server that refuses us (a
wrong password, an unknown database) is a configuration error: `open_postgres` raises
`DatabaseError`.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import trio
import trio_asyncio

from triosip.ops._base import OpFailed
from triosip.ops._db import (
    Database,
    DatabaseError,
    DatabaseStatistics,
    Params,
    check_postgres_url,
    redact,
)

if TYPE_CHECKING:
    import asyncio

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long a new connection may take (TCP, TLS, authentication), in seconds.
CONNECT_TIMEOUT = 5.0
# How long a connection may take to settle after a cancel or a failure before it is closed.
SETTLE_TIMEOUT = 2.0

# The errors that say the connection, not the statement, failed.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    TimeoutError,
)
# The errors at connect time that a retry won't fix: say so at start, not at each op.
_REFUSALS: tuple[type[BaseException], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidCatalogNameError,
)

# What `translate` looks at: literals, quoted names and comments (skipped), casts (skipped),
# and the parameters ? and :name.
_TOKENS = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|::|\?|:[A-Za-z_][A-Za-z0-9_]*",
    re.DOTALL,
)


@functools.lru_cache(maxsize=1024)
def _translate(sql: str) -> tuple[str, tuple[str, ...] | int]:
    names: list[str] = []
    count = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal count
        token = match.group()
        if token == "?":
            count += 1
            return f"${count}"
        if token.startswith(":") and token != "::":
            name = token[1:]
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"
        return token

    translated = _TOKENS.sub(replace, sql)
    if count and names:
        raise ValueError("use either ? or :name parameters in one statement, not both")
    return translated, tuple(names) if names else count


def translate(sql: str, params: Params) -> tuple[str, list[Any]]:
    """Turn ``?`` or ``:name`` parameters into PostgreSQL's ``$1``, ``$2``….

    Args:
        sql: SQL with ``?`` (and a sequence of values) or ``:name`` (and a mapping).
        params: the values.

    Returns:
        The SQL for PostgreSQL, and its values in ``$n`` order.

    Raises:
        ValueError: a mapping for ``?`` parameters, a missing name, or both styles at once.
    """
    translated, names = _translate(sql)
    if isinstance(params, Mapping):
        if not isinstance(names, tuple):
            raise ValueError("named values given for a statement with ? parameters")
        missing = [name for name in names if name not in params]
        if missing:
            raise ValueError(f"no value for :{', :'.join(missing)}")
        return translated, [params[name] for name in names]
    if isinstance(names, tuple):
        raise ValueError("a sequence of values given for a statement with :name parameters")
    return translated, list(params)


class _Pool:
    """Connections of one kind (readers or writers), opened on demand, at most `size`."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], size: int) -> None:
        self._connect = connect
        self.slots = trio.CapacityLimiter(size)
        self.idle: list[asyncpg.Connection] = []

    def take_idle(self) -> asyncpg.Connection | None:
        while self.idle:
            connection = self.idle.pop()
            if not connection.is_closed():  # the server may have closed it (a restart)
                return connection
        return None

    async def take(self) -> asyncpg.Connection:
        return self.take_idle() or await self._connect()


class PostgresDatabase(Database):
    """The PostgreSQL backend (see the module doc)."""

    def __init__(
        self, *, url: str, pool: int, writers: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(url=redact(url))
        self._dsn = url
        self._loop = loop
        self.readers = _Pool(functools.partial(self.connect, read_only=True), pool)
        self.writers = _Pool(functools.partial(self.connect, read_only=False), writers)

    def statistics(self) -> DatabaseStatistics:
        """A snapshot of the pool and of the counters of finished queries; ``readers_idle``
        counts the free reader slots (a connection the server dropped reopens on demand).

        Returns:
            The snapshot.
        """
        readers = self.readers.slots.statistics()
        return self._statistics(
            readers,
            int(readers.total_tokens) - readers.borrowed_tokens,
            self.writers.slots.statistics(),
        )

    async def _query(self, sql: str, params: Params) -> list[dict[str, Any]]:
        text, values = self._translated(sql, params)
        return await self.run(self.readers, sql, functools.partial(fetch, text, values))

    async def _execute(self, sql: str, params: Params) -> int:
        text, values = self._translated(sql, params)
        return await self.run(self.writers, sql, functools.partial(execute, text, values))

    @staticmethod
    def _translated(sql: str, params: Params) -> tuple[str, list[Any]]:
        try:
            return translate(sql, params)
        except ValueError as exc:
            raise OpFailed("db", sql, str(exc)) from None

    def _aio(self, work: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        """Run ``work()`` as a task of the asyncio loop; a trio cancel cancels the task, and
        returns once it has ended."""

        async def wrapped() -> T:
            # The coroutine is made here, in the task: a task cancelled before its first
            # step leaves no coroutine that was never awaited.
            return await work()

        result: Awaitable[T] = self._loop.run_aio_coroutine(wrapped())  # type: ignore[attr-defined]
        return result

    async def connect(self, *, read_only: bool) -> asyncpg.Connection:
        settings = {"application_name": "triosip"}
        if read_only:
            settings["default_transaction_read_only"] = "on"
        connection: asyncpg.Connection = await self._aio(
            functools.partial(
                asyncpg.connect, self._dsn, timeout=CONNECT_TIMEOUT, server_settings=settings
            )
        )
        return connection

    async def run(
        self,
        pool: _Pool,
        sql: str,
        work: Callable[[asyncpg.Connection], Awaitable[T]],
    ) -> T:
        async with pool.slots:
            try:
                connection = await pool.take()
            except _REFUSALS + _CONNECTION_ERRORS as exc:
                raise OpFailed("db", sql, f"cannot connect: {_describe(exc)}") from exc
            clean = False
            try:
                result = await self._aio(functools.partial(work, connection))
                clean = not connection.is_in_transaction()
                return result
            except asyncpg.PostgresError as exc:
                if isinstance(exc, _CONNECTION_ERRORS):
                    raise OpFailed("db", sql, f"connection lost: {_describe(exc)}") from exc
                raise OpFailed("db", sql, _describe(exc)) from exc
            except _CONNECTION_ERRORS as exc:
                raise OpFailed("db", sql, f"connection lost: {_describe(exc)}") from exc
            finally:
                if clean:
                    pool.idle.append(connection)
                else:
                    with trio.CancelScope(shield=True):
                        await self._settle(pool, connection)

    async def _settle(self, pool: _Pool, connection: asyncpg.Connection) -> None:
        """Put back a connection whose op was cancelled or failed, once it is idle on the
        server; close it if that can't be done in `SETTLE_TIMEOUT`."""
        if connection.is_closed():
            return
        with trio.move_on_after(SETTLE_TIMEOUT):
            try:
                # asyncpg runs it only once a cancel request in flight has been answered
                # (the cancelled statement has ended); outside a transaction it is a no-op.
                await self._aio(functools.partial(connection.execute, "ROLLBACK"))
            except (asyncpg.PostgresError, *_CONNECTION_ERRORS) as exc:
                logger.info("database connection dropped after a failed op: %s", exc)
            else:
                if not connection.is_in_transaction():
                    pool.idle.append(connection)
                    return
        connection.terminate()

    async def fill(self) -> None:
        """Open every connection of the pool now: a warm pool, and a refusal seen at start."""
        for pool, read_only in ((self.readers, True), (self.writers, False)):
            for _ in range(int(pool.slots.total_tokens)):
                pool.idle.append(await self.connect(read_only=read_only))

    async def close(self) -> None:
        for pool in (self.readers, self.writers):
            connections, pool.idle = pool.idle, []
            for connection in connections:
                with trio.move_on_after(SETTLE_TIMEOUT) as scope:
                    try:
                        await self._aio(connection.close)
                    except _CONNECTION_ERRORS:
                        scope.cancel()
                if scope.cancelled_caught:
                    connection.terminate()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.errno:
        return f"{os.strerror(exc.errno)} ({text})"
    if isinstance(exc, asyncpg.PostgresError) and exc.sqlstate:
        return f"{text} (SQLSTATE {exc.sqlstate})"
    return text


def rowcount(status: str) -> int:
    """The rows a command changed, from its status (``INSERT 0 3``, ``UPDATE 2``), or -1."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() and " " in status else -1


async def fetch(
    sql: str, values: Sequence[Any], connection: asyncpg.Connection
) -> list[dict[str, Any]]:
    """On the asyncio loop: run a query and return its rows as dicts."""
    return [dict(record) for record in await connection.fetch(sql, *values)]


async def execute(sql: str, values: Sequence[Any], connection: asyncpg.Connection) -> int:
    """On the asyncio loop: run one statement (its own transaction) and count its rows."""
    status: str = await connection.execute(sql, *values)
    return rowcount(status)


@asynccontextmanager
async def open_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    """The process's asyncio loop, hosted by trio: the one already open, else one for the
    block (trio-asyncio runs at most one per trio run)."""
    loop: asyncio.AbstractEventLoop | None = trio_asyncio.current_loop.get()
    if loop is not None:
        yield loop
        return
    try:
        async with trio_asyncio.open_loop() as opened:
            yield opened
    except BaseExceptionGroup as group:
        # The loop's own nurseries wrap whatever the block raised; give it back as the block
        # raised it, as the sqlite backend does, when it is a single exception.
        leaves = list(_leaves(group))
        if len(leaves) != 1:
            raise
        raise leaves[0] from leaves[0].__cause__


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


@asynccontextmanager
async def open_postgres(url: str, *, pool: int, writers: int) -> AsyncIterator[PostgresDatabase]:
    """Open a PostgreSQL database (see `triosip.ops.open_database`) and close it at the end.

    One reader connection is opened at once, to tell a refusal from a server that is down.

    Raises:
        ValueError: a malformed URL, or a pool size below 1.
        DatabaseError: the server refused us (user, password, database name).
    """
    check_postgres_url(url)
    if pool < 1 or writers < 1:
        raise ValueError(f"the pool must have at least 1 connection, not {min(pool, writers)}")
    async with open_loop() as loop:
        database = PostgresDatabase(url=url, pool=pool, writers=writers, loop=loop)
        try:
            await database.fill()
        except _REFUSALS as exc:
            await database.close()
            raise DatabaseError(f"--db {database.url}: {_describe(exc)}") from None
        except _CONNECTION_ERRORS as exc:
            # Not fatal: each op fails with OpFailed until the server is back.
            await database.close()
            logger.error(
                "database %s unreachable: %s; its ops fail until it is back",
                database.url,
                _describe(exc),
            )
        logger.debug("database %s opened: %d readers, %d writers", database.url, pool, writers)
        try:
            yield database
        finally:
            database._closed = True
            with trio.CancelScope(shield=True):
                await database.close()
            logger.debug("database %s closed", database.url)
