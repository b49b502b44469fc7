"""The ``triosip`` command line: ``triosip run`` (the proxy), and ``triosip tasks`` and
``triosip stats``, which ask a running proxy's management interface."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from triosip import __version__
from triosip.mi import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    MIClient,
    MIConfig,
    MIError,
    MIRefused,
    MIUnavailable,
    parse_mi_address,
    print_stats,
    print_tasks,
    serve_mi,
)
from triosip.ops import database_path, open_database, open_rest_client
from triosip.proxy import Proxy, ProxyConfig
from triosip.script import (
    DEFAULT_ROUTES,
    RoutesLoadError,
    ScriptEnvironment,
    ScriptHandlers,
    load_routes,
)
from triosip.transaction import DEFAULT_MAX_TRANSACTIONS, LoadLimits, TimerConfig
from triosip.transport import Address, TransportError, TransportLimits, parse_listen_spec

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

DEFAULT_LISTEN = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EXIT_FAILURE = 1
EXIT_USAGE = 2
DEFAULT_MI = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
TASKS_LIMIT = 50
"""Transactions `triosip tasks` draws unless --limit says otherwise (a summary line gives
the counts of all)."""


class UsageError(Exception):
    """A command-line mistake: one line that says what to fix, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triosip",
        description="A SIP proxy on trio: routes run async work that a transaction cancels.",
    )
    parser.add_argument("--version", action="version", version=f"triosip {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run the proxy")
    run.add_argument(
        "routes", nargs="?", metavar="ROUTES", help="the routes file (default: the default routes)"
    )
    run.add_argument(
        "--listen",
        action="append",
        metavar="PROTO:HOST:PORT",
        help="an address to listen on, e.g. udp:127.0.0.1:5060 or tcp:[::1]:5060 "
        "(repeatable; default: UDP and TCP on 127.0.0.1:5060)",
    )
    run.add_argument(
        "--define",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a script parameter, read by routes as req.params[NAME] (repeatable)",
    )
    run.add_argument(
        "--fr-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="tm's fr_timeout: how long to wait for any reply (default 30)",
    )
    run.add_argument(
        "--fr-inv-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="tm's fr_inv_timeout: how long an INVITE may ring (default 120)",
    )
    run.add_argument(
        "--db",
        metavar="URL",
        help="the database routes query: sqlite:///relative.db or sqlite:////absolute.db "
        "(default: triosip.sqlite in $TRIOSIP_DATA_DIR, else $XDG_DATA_HOME/triosip, "
        "else ~/.local/share/triosip)",
    )
    run.add_argument(
        "--rest-connections",
        type=int,
        default=100,
        metavar="N",
        help="the most HTTP connections REST ops keep open at once (default 100)",
    )
    run.add_argument(
        "--max-launched",
        type=int,
        default=1000,
        metavar="N",
        help="the most launch()ed ops running at once; more are refused (default 1000)",
    )
    run.add_argument(
        "--max-transactions",
        type=int,
        default=DEFAULT_MAX_TRANSACTIONS,
        metavar="N",
        help="the most server transactions held at once, in progress or absorbing "
        f"retransmissions; new requests beyond get 503 (default {DEFAULT_MAX_TRANSACTIONS:,})",
    )
    run.add_argument(
        "--pike",
        type=float,
        metavar="RATE",
        help="new transactions per second one source IP may start; beyond, its requests "
        "are dropped (default: no limit)",
    )
    run.add_argument("--t1", type=float, default=0.5, metavar="SECONDS", help="RFC 3261 T1")
    run.add_argument("--t2", type=float, default=4.0, metavar="SECONDS", help="RFC 3261 T2")
    run.add_argument("--t4", type=float, default=5.0, metavar="SECONDS", help="RFC 3261 T4")
    run.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long live transactions may take to end",
    )
    run.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default INFO",
    )
    run.add_argument(
        "--mi",
        default=DEFAULT_MI,
        metavar="HOST:PORT",
        help=f"where the management interface listens (default {DEFAULT_MI}), or off",
    )
    run.add_argument(
        "--reply-to-via",
        action="store_true",
        help="send responses where the request's Via says (its maddr, received, rport) "
        "rather than back to where the request came from: unsafe on the open internet, "
        "where it makes the proxy a reflector",
    )
    token = run.add_mutually_exclusive_group()
    token.add_argument(
        "--mi-token", metavar="TOKEN", help="the token MI clients not on loopback must show"
    )
    token.add_argument("--mi-token-file", metavar="PATH", help="read --mi-token from a file")

    tasks = commands.add_parser("tasks", help="draw the live task tree of a running proxy")
    _add_mi_client_arguments(tasks)
    tasks.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    tasks.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="--watch's period"
    )
    tasks.add_argument("--call-id", metavar="CALL-ID", help="only this call's transactions")
    tasks.add_argument(
        "--older-than", type=float, metavar="SECONDS", help="only transactions this old"
    )
    tasks.add_argument("--method", metavar="METHOD", help="only transactions of this method")
    tasks.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help=f"show the N oldest transactions (default {TASKS_LIMIT} in the tree, all with "
        "--json; 0 for all); the heading says how many there are",
    )
    tasks.add_argument(
        "--summary",
        action="store_true",
        help="only the counts: transactions by state and method, ops by kind",
    )

    stats = commands.add_parser("stats", help="show the counters of a running proxy")
    _add_mi_client_arguments(stats)
    return parser


def _add_mi_client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mi",
        default=DEFAULT_MI,
        metavar="HOST:PORT",
        help=f"the management interface of the proxy (default {DEFAULT_MI})",
    )
    parser.add_argument("--json", action="store_true", help="print the MI's JSON")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", metavar="TOKEN", help="the MI token (for an MI off loopback)")
    token.add_argument("--token-file", metavar="PATH", help="read --token from a file")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``triosip`` command.

    Args:
        argv: the arguments, without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The process exit code: 0 on success, 2 for something the user must fix.
    """
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return _run(args) if args.command == "run" else _query_mi(args)
    except UsageError as exc:
        print(f"triosip: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT, stream=sys.stderr)
    listen = _listen_addresses(args.listen or DEFAULT_LISTEN)
    params = _defines(args.define)
    mi = _mi_config(args, params)
    for name, value in (
        ("--fr-timeout", args.fr_timeout),
        ("--fr-inv-timeout", args.fr_inv_timeout),
        ("--t1", args.t1),
        ("--t2", args.t2),
        ("--t4", args.t4),
    ):
        if not value > 0:
            raise UsageError(f"{name} must be a number of seconds > 0, not {value}")
    for name, count in (
        ("--rest-connections", args.rest_connections),
        ("--max-launched", args.max_launched),
        ("--max-transactions", args.max_transactions),
    ):
        if count < 1:
            raise UsageError(f"{name} must be at least 1, not {count}")
    if args.pike is not None and not args.pike > 0:
        raise UsageError(f"--pike must be a number of requests per second > 0, not {args.pike}")
    db_url = args.db or _default_db_url()
    try:
        database_path(db_url)
    except ValueError as exc:
        raise UsageError(f"--db: {exc}") from None
    try:
        routes = load_routes(args.routes, params)
    except RoutesLoadError as exc:
        raise UsageError(str(exc)) from None
    handlers = ScriptHandlers(routes)
    proxy = Proxy(
        listen,
        handlers=handlers,
        config=ProxyConfig(fr_timeout=args.fr_timeout, fr_inv_timeout=args.fr_inv_timeout),
        timers=TimerConfig(t1=args.t1, t2=args.t2, t4=args.t4),
        limits=_transport_limits(args),
        load=LoadLimits(max_transactions=args.max_transactions, pike_rate=args.pike),
    )
    try:
        trio.run(_serve, proxy, handlers, args, db_url, mi)
    except BaseExceptionGroup as group:
        # A listener that can't bind or a database that can't open fails at startup, deep
        # in the nurseries: say what to fix, not the traceback of each nursery.
        startup = _first_leaf(group, (TransportError, sqlite3.Error, MIError))
        if startup is None:
            raise
        raise UsageError(_startup_problem(startup, db_url)) from None
    except (TransportError, sqlite3.Error, MIError) as exc:
        raise UsageError(_startup_problem(exc, db_url)) from None
    return 0


def _transport_limits(args: argparse.Namespace) -> TransportLimits:
    """The transport's settings that ``triosip run`` takes from its arguments."""
    return TransportLimits(reply_to_via=args.reply_to_via)


def _first_leaf(
    group: BaseExceptionGroup[BaseException], types: tuple[type[Exception], ...]
) -> BaseException | None:
    matched: BaseException | None = group.split(types)[0]
    while isinstance(matched, BaseExceptionGroup):
        matched = matched.exceptions[0]
    return matched


def _startup_problem(exc: BaseException, db_url: str) -> str:
    return f"--db {db_url}: {exc}" if isinstance(exc, sqlite3.Error) else str(exc)


async def _serve(
    proxy: Proxy,
    handlers: ScriptHandlers,
    args: argparse.Namespace,
    db_url: str,
    mi: MIConfig | None,
) -> None:
    async with (
        open_database(db_url) as db,
        open_rest_client(max_connections=args.rest_connections) as rest,
    ):
        logger.info("database %s", db_url)
        handlers.environment = ScriptEnvironment(db=db, rest=rest, max_launched=args.max_launched)
        await serve_until_signalled(proxy, handlers.environment, args.grace, mi=mi)


async def serve_until_signalled(
    proxy: Proxy, environment: ScriptEnvironment, grace: float, *, mi: MIConfig | None = None
) -> None:
    """Run `proxy` until SIGTERM or SIGINT, then shut down as DESIGN.md promises: stop
    taking new transactions, let live ones finish within `grace` seconds, cancel the rest
    (their ops and launched work with them). The management interface (`mi`, if given)
    starts first, so that a port in use fails before any SIP listener opens, and serves
    until the end of the shutdown.
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(environment.serve)
            if mi is not None:
                await nursery.start(serve_mi, proxy, mi)
            await nursery.start(proxy.serve)
            nursery.start_soon(freeze_survivors, name="gc freeze")
            received = await signals.__anext__()
            logger.info(
                "%s: no new transactions; waiting up to %.1f s for %d live ones",
                signal.Signals(received).name,
                grace,
                proxy.unanswered,
            )
            await proxy.shut_down(grace)
            nursery.cancel_scope.cancel()
    logger.info("stopped")


# Why freeze: a transaction outlives its call by 64*T1 (Timers J, L, M), so ~200 tracked
# objects per call stay alive for 32 s, and CPython's full collections walk them all again
# and again: 30-45% of the CPU of a call and 300-450 ms pauses (retransmission storms),
# reclaiming nothing, since calls make no reference cycles. Freezing what survived a
# second keeps it out of every later collection; a rare unfreeze + collect reclaims the
# cycles a traceback or a script may have frozen.
FREEZE_PERIOD = 1.0
THAW_PERIOD = 600.0


async def freeze_survivors() -> None:
    """Move the objects that survived the last second out of the collector's sight."""
    since_thaw = 0.0
    while True:
        await trio.sleep(FREEZE_PERIOD)
        since_thaw += FREEZE_PERIOD
        if since_thaw >= THAW_PERIOD:
            since_thaw = 0.0
            gc.unfreeze()
            gc.collect()
        gc.freeze()


def _default_db_url() -> str:
    """The embedded database's file, created with its folder on first use."""
    folder = os.environ.get("TRIOSIP_DATA_DIR")
    if not folder:
        xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        folder = str(Path(xdg) / "triosip")
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the data folder {folder}: {exc}; give --db") from None
    return f"sqlite:///{Path(folder).resolve() / 'triosip.sqlite'}"


def _mi_config(args: argparse.Namespace, params: dict[str, str]) -> MIConfig | None:
    address = _mi_address(args.mi)
    if address is None:
        return None
    host, port = address
    token = _token(args.mi_token, args.mi_token_file, "--mi-token-file")
    return MIConfig(
        host=host,
        port=port,
        token=token,
        routes_file=args.routes or DEFAULT_ROUTES,
        params=params,
    )


def _mi_address(spec: str) -> tuple[str, int] | None:
    try:
        return parse_mi_address(spec)
    except ValueError as exc:
        raise UsageError(f"--mi {spec}: {exc}") from None


def _token(token: str | None, token_file: str | None, option: str) -> str | None:
    if token_file is None:
        return token or None
    try:
        text = Path(token_file).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{option} {token_file}: {exc}") from None
    if not text:
        raise UsageError(f"{option} {token_file}: the file is empty")
    return text


def _query_mi(args: argparse.Namespace) -> int:
    """``triosip tasks`` and ``triosip stats``: ask a running proxy's MI."""
    address = _mi_address(args.mi)
    if address is None:
        raise UsageError(f"triosip {args.command} needs the MI's HOST:PORT, not --mi off")
    token = _token(args.token, args.token_file, "--token-file")
    try:
        with MIClient(*address, token=token) as client:
            if args.command == "stats":
                print_stats(client, as_json=args.json)
                return 0
            if args.watch and args.json:
                raise UsageError("--watch draws the tree; --json prints it once: pick one")
            if not args.interval > 0:
                raise UsageError(f"--interval must be a number of seconds > 0, not {args.interval}")
            if args.older_than is not None and not args.older_than >= 0:
                raise UsageError(f"--older-than must be >= 0 seconds, not {args.older_than}")
            if args.limit is not None and args.limit < 0:
                raise UsageError(f"--limit must be a number >= 0 (0 for all), not {args.limit}")
            limit = args.limit if args.limit is not None else None if args.json else TASKS_LIMIT
            filters = {
                "call_id": args.call_id,
                "method": args.method,
                "older_than": None if args.older_than is None else repr(args.older_than),
                "limit": str(limit) if limit else None,
                "summary": "1" if args.summary else None,
            }
            print_tasks(
                client,
                {name: value for name, value in filters.items() if value is not None},
                as_json=args.json,
                watch=args.watch,
                interval=args.interval,
            )
    except (MIUnavailable, MIRefused) as exc:
        print(f"triosip: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _listen_addresses(specs: Sequence[str]) -> list[Address]:
    addresses = []
    for spec in specs:
        try:
            addresses.append(parse_listen_spec(spec))
        except ValueError as exc:
            raise UsageError(f"--listen {spec}: {exc}") from None
    return addresses


def _defines(defines: Sequence[str]) -> dict[str, str]:
    params = {}
    for define in defines:
        name, sep, value = define.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--define {define!r}: write NAME=VALUE")
        params[name.strip()] = value
    return params


if __name__ == "__main__":
    sys.exit(main())
