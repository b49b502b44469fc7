"""The ``triosip`` command line: ``triosip run`` (the proxy)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from triosip import __version__
from triosip.ops import database_path, open_database, open_rest_client
from triosip.proxy import Proxy, ProxyConfig
from triosip.script import (
    RoutesLoadError,
    ScriptEnvironment,
    ScriptHandlers,
    load_routes,
)
from triosip.transaction import TimerConfig
from triosip.transport import Address, TransportError, parse_listen_spec

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

DEFAULT_LISTEN = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EXIT_USAGE = 2


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
    return parser


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
        return _run(args)
    except UsageError as exc:
        print(f"triosip: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT, stream=sys.stderr)
    listen = _listen_addresses(args.listen or DEFAULT_LISTEN)
    params = _defines(args.define)
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
    ):
        if count < 1:
            raise UsageError(f"{name} must be at least 1, not {count}")
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
    )
    try:
        trio.run(_serve, proxy, handlers, args, db_url)
    except BaseExceptionGroup as group:
        # A listener that can't bind or a database that can't open fails at startup, deep
        # in the nurseries: say what to fix, not the traceback of each nursery.
        startup = _first_leaf(group, (TransportError, sqlite3.Error))
        if startup is None:
            raise
        raise UsageError(_startup_problem(startup, db_url)) from None
    except (TransportError, sqlite3.Error) as exc:
        raise UsageError(_startup_problem(exc, db_url)) from None
    return 0


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
    proxy: Proxy, handlers: ScriptHandlers, args: argparse.Namespace, db_url: str
) -> None:
    async with (
        open_database(db_url) as db,
        open_rest_client(max_connections=args.rest_connections) as rest,
    ):
        logger.info("database %s", db_url)
        handlers.environment = ScriptEnvironment(db=db, rest=rest, max_launched=args.max_launched)
        await serve_until_signalled(proxy, handlers.environment, args.grace)


async def serve_until_signalled(proxy: Proxy, environment: ScriptEnvironment, grace: float) -> None:
    """Run `proxy` until SIGTERM or SIGINT, then shut down as DESIGN.md promises: stop
    taking new transactions, let live ones finish within `grace` seconds, cancel the rest
    (their ops and launched work with them).
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(environment.serve)
            await nursery.start(proxy.serve)
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
