"""The ``triosip`` command line: ``triosip run`` (the proxy), ``triosip check`` (a routes
file's checks and drill), and ``triosip tasks``, ``triosip stats`` and ``triosip reload``,
which ask a running proxy's management interface."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from triosip import __version__
from triosip.app import serve_triosip
from triosip.config import LOG_LEVELS, Config, ConfigError
from triosip.log import LOG_FORMATS, LogTargetError, configure_logging
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
)
from triosip.ops import DatabaseError
from triosip.pidfile import PidFileError, remove_pid_file, write_pid_file
from triosip.script import RoutesLoadError
from triosip.transport import Address, TransportError, parse_listen_spec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from triosip.app import Running

logger = logging.getLogger(__name__)

DEFAULTS = Config()
"""Where the defaults of ``triosip run``'s options come from."""
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
        "--advertise",
        action=_AdvertiseAction,
        default=[],
        metavar="HOST[:PORT]",
        help="the name that Via and Record-Route give the --listen just before it, instead "
        "of its address: behind NAT, or a DNS name (default: the listener's address; on "
        "0.0.0.0 or [::], the address each message is sent from)",
    )
    run.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="another name of this proxy, which Route and Request-URI may use (repeatable; "
        "without a port, on every listener's port)",
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
        default=DEFAULTS.fr_timeout,
        metavar="SECONDS",
        help=f"tm's fr_timeout: how long to wait for any reply (default {DEFAULTS.fr_timeout:g})",
    )
    run.add_argument(
        "--fr-inv-timeout",
        type=float,
        default=DEFAULTS.fr_inv_timeout,
        metavar="SECONDS",
        help="tm's fr_inv_timeout: how long an INVITE may ring "
        f"(default {DEFAULTS.fr_inv_timeout:g})",
    )
    run.add_argument(
        "--db",
        metavar="URL",
        help="the database routes query: sqlite:///relative.db, sqlite:////absolute.db or "
        "postgresql://USER@HOST:PORT/DB (default: triosip.sqlite in $TRIOSIP_DATA_DIR, else "
        "$XDG_DATA_HOME/triosip, else ~/.local/share/triosip)",
    )
    run.add_argument(
        "--db-pool",
        type=int,
        default=DEFAULTS.db_pool,
        metavar="N",
        help=f"how many queries may run at once, a connection each (default {DEFAULTS.db_pool})",
    )
    run.add_argument(
        "--rest-connections",
        type=int,
        default=DEFAULTS.rest_connections,
        metavar="N",
        help="the most HTTP connections REST ops keep open at once "
        f"(default {DEFAULTS.rest_connections})",
    )
    run.add_argument(
        "--rest-ca-file",
        metavar="PEM",
        help="CA certificates (PEM) that https:// REST ops trust as well as the system's, "
        "e.g. a private CA's",
    )
    run.add_argument(
        "--max-launched",
        type=int,
        default=DEFAULTS.max_launched,
        metavar="N",
        help="the most launch()ed ops running at once; more are refused "
        f"(default {DEFAULTS.max_launched})",
    )
    run.add_argument(
        "--max-transactions",
        type=int,
        default=DEFAULTS.max_transactions,
        metavar="N",
        help="the most server transactions held at once, in progress or absorbing "
        f"retransmissions; new requests beyond get 503 (default {DEFAULTS.max_transactions:,})",
    )
    run.add_argument(
        "--pike",
        type=float,
        default=DEFAULTS.pike,
        metavar="RATE",
        help="new transactions per second one source IP may start; beyond, its requests "
        "are dropped (default: no limit)",
    )
    for timer in ("t1", "t2", "t4"):
        run.add_argument(
            f"--{timer}",
            type=float,
            default=getattr(DEFAULTS, timer),
            metavar="SECONDS",
            help=f"RFC 3261 {timer.upper()} (default {getattr(DEFAULTS, timer):g})",
        )
    run.add_argument(
        "--grace",
        type=float,
        default=DEFAULTS.grace,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long live transactions may take to end "
        f"(default {DEFAULTS.grace:g})",
    )
    # -- logging (triosip.log) --
    run.add_argument(
        "--log-level",
        default=DEFAULTS.log_level,
        type=str.upper,
        choices=LOG_LEVELS,
        help=f"the least severe lines logged, in any case (default {DEFAULTS.log_level})",
    )
    run.add_argument(
        "--log-target",
        default=DEFAULTS.log_target,
        metavar="stderr|syslog|FILE",
        help="where the log goes: stderr, the local syslog (/dev/log, facility daemon), or "
        f"a file to append to, reopened when rotated (default {DEFAULTS.log_target})",
    )
    run.add_argument(
        "--log-format",
        default=DEFAULTS.log_format,
        choices=LOG_FORMATS,
        help="text lines, or one JSON object per line with call_id and branch fields "
        f"(default {DEFAULTS.log_format})",
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
    run.add_argument(
        "--pid-file",
        metavar="PATH",
        help="write the proxy's PID to PATH, and remove it on exit (default: none)",
    )

    check = commands.add_parser(
        "check", help="check routes files: load them, then drill each route with faults"
    )
    check.add_argument("routes", nargs="+", metavar="ROUTES", help="the routes files")
    check.add_argument(
        "--define",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a script parameter, as for run; @callee, @http and @program stand for the "
        "drill's own callee, HTTP server and program (repeatable)",
    )
    check.add_argument(
        "--db", metavar="URL", help="the database req.db queries (default: a fresh sqlite file)"
    )
    check.add_argument(
        "--fault", action="append", default=[], metavar="NAME", help="only this fault (repeatable)"
    )

    tasks = commands.add_parser("tasks", help="draw the live task tree of a running proxy")
    _add_mi_client_arguments(tasks)
    tasks.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    tasks.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="--watch's period (default 1)",
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

    reload = commands.add_parser(
        "reload",
        help="load a running proxy's routes file again: new transactions get the new routes",
    )
    _add_mi_client_arguments(reload)
    return parser


class _AdvertiseAction(argparse.Action):
    """``--advertise``: for the ``--listen`` given just before it (its index)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        listens = getattr(namespace, "listen", None) or []
        if not listens:
            parser.error(f"--advertise {values}: put it after the --listen it names")
        advertised = [*getattr(namespace, self.dest), (len(listens) - 1, str(values))]
        setattr(namespace, self.dest, advertised)


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
        if args.command == "check":
            return _check(args)
        return _run(args) if args.command == "run" else _query_mi(args)
    except (UsageError, ConfigError) as exc:
        print(f"triosip: {exc}", file=sys.stderr)
        return EXIT_USAGE


def build_config(args: argparse.Namespace) -> Config:
    """The `Config` of ``triosip run``'s arguments.

    Raises:
        UsageError: an option that does not parse (``--listen``, ``--define``, ``--mi``).
        ConfigError: a setting out of range.
    """
    listen = _listen_addresses(args.listen) if args.listen else DEFAULTS.listen
    return Config(
        listen=listen,
        advertise={listen[index]: name for index, name in args.advertise},
        aliases=tuple(args.alias),
        routes_file=args.routes,
        params=_defines(args.define),
        fr_timeout=args.fr_timeout,
        fr_inv_timeout=args.fr_inv_timeout,
        t1=args.t1,
        t2=args.t2,
        t4=args.t4,
        max_transactions=args.max_transactions,
        pike=args.pike,
        reply_to_via=args.reply_to_via,
        db_url=args.db or _default_db_url(),
        db_pool=args.db_pool,
        rest_connections=args.rest_connections,
        rest_ca_file=args.rest_ca_file,
        max_launched=args.max_launched,
        grace=args.grace,
        mi=_mi_config(args),
        log_level=args.log_level,
        log_target=args.log_target,
        log_format=args.log_format,
    )


def _run(args: argparse.Namespace) -> int:
    config = build_config(args)
    try:
        configure_logging(config.log_level, config.log_target, config.log_format)
        if args.pid_file:
            write_pid_file(args.pid_file)
    except (LogTargetError, PidFileError) as exc:
        raise UsageError(str(exc)) from None
    try:
        return _run_config(config)
    finally:
        if args.pid_file:
            remove_pid_file(args.pid_file)


def _run_config(config: Config) -> int:
    startup_errors = (TransportError, sqlite3.Error, DatabaseError, MIError, RoutesLoadError)
    try:
        trio.run(_serve, config)
    except BaseExceptionGroup as group:
        # A routes file that does not load, a listener that can't bind or a database that
        # can't open fails at startup, deep in the nurseries: say what to fix, not the
        # traceback of each nursery.
        startup = _first_leaf(group, startup_errors)
        if startup is None:
            raise
        raise UsageError(_startup_problem(startup, config)) from None
    except startup_errors as exc:
        raise UsageError(_startup_problem(exc, config)) from None
    return 0


def _check(args: argparse.Namespace) -> int:
    """``triosip check``: exit 0 when every line of the drill passed, 1 when one failed."""
    from triosip.drill import check_routes  # the drill runs peers: only for this command

    try:
        return check_routes(args.routes, _defines(args.define), db_url=args.db, faults=args.fault)
    except (RoutesLoadError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def _first_leaf(
    group: BaseExceptionGroup[BaseException], types: tuple[type[Exception], ...]
) -> BaseException | None:
    matched: BaseException | None = group.split(types)[0]
    while isinstance(matched, BaseExceptionGroup):
        matched = matched.exceptions[0]
    return matched


def _startup_problem(exc: BaseException, config: Config) -> str:
    return f"--db {config.db_url}: {exc}" if isinstance(exc, sqlite3.Error) else str(exc)


async def _serve(config: Config) -> None:
    """Run triosip until SIGTERM or SIGINT, then shut it down (`Running.shut_down`)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            running: Running = await nursery.start(serve_triosip, config)
            received = await signals.__anext__()
            await running.shut_down(config.grace, why=signal.Signals(received).name)
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


def _mi_config(args: argparse.Namespace) -> MIConfig | None:
    address = _mi_address(args.mi)
    if address is None:
        return None
    host, port = address
    token = _token(args.mi_token, args.mi_token_file, "--mi-token-file")
    return MIConfig(host=host, port=port, token=token)


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
            if args.command == "reload":
                return _reload(client, as_json=args.json)
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


def _reload(client: MIClient, *, as_json: bool) -> int:
    """``triosip reload``: ``POST /reload``; a routes file that does not load is one line
    (the old routes keep running) and exit code 1."""
    answer = client.post_json("/reload")
    if as_json:
        print(json.dumps(answer, indent=2))
    else:
        print(f"reloaded {answer['routes']} (reload {answer['reloads']})")
    return 0


def _listen_addresses(specs: Sequence[str]) -> tuple[Address, ...]:
    addresses = []
    for spec in specs:
        try:
            addresses.append(parse_listen_spec(spec))
        except ValueError as exc:
            raise UsageError(f"--listen {spec}: {exc}") from None
    return tuple(addresses)


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
