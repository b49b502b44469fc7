"""The composition root: `serve_triosip` builds a triosip from a `Config` and runs it.

It is the one place that builds the parts and hands each its collaborators: the
database and REST client the routes reach, the script environment and handlers, the
transport layer, the transaction layer over it, the proxy over both, and the management
interface over what the proxy shows. It owns them all in one nursery, in the shape of
trio's ``serve_listeners``: ``await nursery.start(serve_triosip, config)`` returns a
`Running` once the listeners are bound; `Running.shut_down` stops it as
docs/cancellation.md promises. ``triosip run``, `triosip.testing.start_proxy` and the
tests all start the proxy here.
"""

from __future__ import annotations

import gc
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from triosip.mi import MISources, serve_mi
from triosip.ops import open_database, open_rest_client, rest_ssl_context
from triosip.proxy import Proxy, ProxyInbox
from triosip.script import DEFAULT_ROUTES, ScriptEnvironment, ScriptHandlers, load_routes
from triosip.transaction import TransactionLayer
from triosip.transport import TransportLayer

if TYPE_CHECKING:
    from triosip.config import Config
    from triosip.proxy import RouteHandlers
    from triosip.script.api import Routes
    from triosip.transport import Address, WorkerSockets

__all__ = ["Running", "freeze_survivors", "serve_triosip"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Running:
    """A triosip that `serve_triosip` started, as its ``task_status`` reports it.

    Attributes:
        listeners: the bound SIP listeners, in the order of ``config.listen``, with their
            real ports (when 0 was asked).
        proxy: the proxy: its ``statistics()``, its live transactions.
        environment: what routes reach beyond their transaction (database, REST client,
            launched work).
        mi: where the management interface listens, or None without one.
        scope: the cancel scope of everything `serve_triosip` runs.
    """

    listeners: tuple[Address, ...]
    proxy: Proxy
    environment: ScriptEnvironment
    mi: tuple[str, int] | None
    scope: trio.CancelScope

    @property
    def handlers(self) -> RouteHandlers:
        """The routes new transactions run (a reload swaps them)."""
        return self.proxy.handlers

    async def shut_down(self, grace: float, *, why: str = "shutdown") -> None:
        """Stop as docs/cancellation.md promises: take no new transactions, let live ones finish
        within `grace` seconds, answer those that did not 503, then cancel the rest
        (their ops and launched work with them), and with it `serve_triosip`.

        Args:
            grace: how long live transactions may take to end, in seconds (>= 0).
            why: what asked, for the log line (the signal's name).
        """
        logger.info(
            "%s: no new transactions; waiting up to %.1f s for %d live ones",
            why,
            grace,
            self.proxy.unanswered,
        )
        await self.proxy.shut_down(grace)
        self.scope.cancel()

    def stop(self) -> None:
        """Cancel everything at once, without a grace period."""
        self.scope.cancel()


async def serve_triosip(
    config: Config,
    *,
    routes: Routes | None = None,
    environment: ScriptEnvironment | None = None,
    worker: WorkerSockets | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a triosip until cancelled (or `Running.shut_down`).

    Owns, in one nursery: the database and the REST client (when `config` asks for
    them), the launched work of the script environment, the management interface (when
    ``config.mi``), the transaction layer and the transport's listeners, and the GC
    tuning (when ``config.freeze_gc``). The MI starts first, so that its port in use fails
    before any SIP listener opens, and serves until the end.

    Args:
        config: the settings.
        routes: routes built in code (tests), run instead of ``config.routes_file``
            (``config.params`` does not apply: the object has its own); there is then no
            file to reload.
        environment: the routes' environment, when the caller opened its resources
            itself (tests); else one is built from ``config`` (``db_url``,
            ``rest_connections``, ``max_launched``).
        worker: for one worker process of ``triosip run --workers N``, its hand-off
            sockets (`triosip.transport.WorkerSockets`): the listeners are then shared
            with the other workers. Its launched work and database pool are its own.
        task_status: ``started(Running)`` once the listeners are bound.

    Raises:
        RoutesLoadError: ``config.routes_file`` does not load.
        TransportError: a listener could not be opened (address in use, say).
        MIError: the management interface cannot listen where asked.
        sqlite3.Error: the database cannot be opened.
        DatabaseError: the database server refused us (a wrong user or password).
    """
    reloadable = routes is None
    loaded = routes if routes is not None else load_routes(config.routes_file, config.params)
    with trio.CancelScope() as scope:
        async with AsyncExitStack() as resources:
            if environment is None:
                db = rest = None
                if config.db_url is not None:
                    db = await resources.enter_async_context(
                        open_database(config.db_url, readers=config.db_pool)
                    )
                    logger.info("database %s", db.url)  # without its password
                if config.rest_connections is not None:
                    rest = await resources.enter_async_context(
                        open_rest_client(
                            max_connections=config.rest_connections,
                            ssl_context=rest_ssl_context(config.rest_ca_file),
                        )
                    )
                environment = ScriptEnvironment(db=db, rest=rest, max_launched=config.max_launched)
            handlers = ScriptHandlers(loaded, environment)
            inbox = ProxyInbox()
            transport = TransportLayer(
                config.listen,
                on_message=inbox.message,
                on_parse_error=inbox.parse_error,
                limits=config.transport,
                worker=worker,
                advertise=config.advertised_names,
                aliases=config.alias_names,
            )
            transactions = TransactionLayer(
                transport,
                timers=config.timers,
                on_request=inbox.request,
                on_stray=inbox.stray,
                limits=config.load,
            )
            proxy = Proxy(
                inbox=inbox,
                transport=transport,
                transactions=transactions,
                handlers=handlers,
                config=config.proxy,
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(environment.serve)
                mi: tuple[str, int] | None = None
                if config.mi is not None:
                    sources = _mi_sources(
                        config, proxy, transport, transactions, environment, reloadable=reloadable
                    )
                    mi = await nursery.start(serve_mi, sources, config.mi)
                listeners: list[Address] = await nursery.start(proxy.serve)
                if config.freeze_gc:
                    nursery.start_soon(freeze_survivors, name="gc freeze")
                task_status.started(
                    Running(
                        listeners=tuple(listeners),
                        proxy=proxy,
                        environment=environment,
                        mi=mi,
                        scope=scope,
                    )
                )


def _mi_sources(
    config: Config,
    proxy: Proxy,
    transport: TransportLayer,
    transactions: TransactionLayer,
    environment: ScriptEnvironment,
    *,
    reloadable: bool,
) -> MISources:
    """What the management interface shows of `proxy`, and its reload."""
    routes_file = config.routes_file or DEFAULT_ROUTES
    params = dict(config.params)

    async def reload() -> None:
        # Importing runs the file's module code: in a thread, so that a slow import never
        # stalls the proxy.
        routes = await trio.to_thread.run_sync(load_routes, routes_file, params)
        # One assignment: new transactions get the new routes, live ones keep theirs.
        proxy.handlers = ScriptHandlers(routes, environment)

    return MISources(
        inspect=proxy.inspect,
        listeners=lambda: transport.listeners,
        proxy_statistics=proxy.statistics,
        transaction_statistics=transactions.statistics,
        transport_statistics=transport.statistics,
        environment=environment,
        routes_file=routes_file if reloadable else None,
        reload=reload if reloadable else None,
    )


# Why freeze: a transaction outlives its call by 64*T1 (Timers J, L, M), so ~200 tracked
# objects per call stay alive for 32 s, and CPython's full collections walk them all again
# and again: 30-45% of the CPU of a call and 300-450 ms pauses (retransmission storms),
# reclaiming nothing, since calls make no reference cycles (tests/proxy/test_garbage.py:
# a cycle per call would be frozen with the rest and held until the next thaw). Freezing
# what survived a second keeps it out of every later collection; a rare unfreeze +
# collect reclaims the cycles a traceback or a script may have frozen.
FREEZE_PERIOD = 1.0
THAW_PERIOD = 600.0
# A call's objects live a fraction of a second to a few seconds: with CPython's default
# (700 allocations) most of them are still alive at a young collection, walked, and
# promoted to be walked again. At 20,000 the young generation is collected about once a
# second at 300 calls/s and most of a call's objects are gone by then: 0.07-0.14 ms less
# of CPU per call (bench_path.py), for a young collection of ~1-2 ms instead of many tiny
# ones, and no memory held (calls make no cycles; the young limit bounds any others).
YOUNG_THRESHOLD = 20_000


async def freeze_survivors() -> None:
    """Move the objects that survived the last second out of the collector's sight."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    since_thaw = 0.0
    while True:
        await trio.sleep(FREEZE_PERIOD)
        since_thaw += FREEZE_PERIOD
        if since_thaw >= THAW_PERIOD:
            since_thaw = 0.0
            gc.unfreeze()
            gc.collect()
        gc.freeze()
