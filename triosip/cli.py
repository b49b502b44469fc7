"""The ``triosip`` command line: ``triosip run`` (the proxy)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import TYPE_CHECKING

import trio

from triosip import __version__
from triosip.proxy import Proxy, ProxyConfig
from triosip.script import RoutesLoadError, ScriptHandlers, load_routes
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
    try:
        routes = load_routes(args.routes, params)
    except RoutesLoadError as exc:
        raise UsageError(str(exc)) from None
    proxy = Proxy(
        listen,
        handlers=ScriptHandlers(routes),
        config=ProxyConfig(fr_timeout=args.fr_timeout, fr_inv_timeout=args.fr_inv_timeout),
        timers=TimerConfig(t1=args.t1, t2=args.t2, t4=args.t4),
    )
    try:
        trio.run(serve_until_signalled, proxy, args.grace)
    except TransportError as exc:
        raise UsageError(str(exc)) from None
    return 0


async def serve_until_signalled(proxy: Proxy, grace: float) -> None:
    """Run `proxy` until SIGTERM or SIGINT, then shut down as DESIGN.md promises: stop
    taking new transactions, let live ones finish within `grace` seconds, cancel the rest.
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.serve)
            received = await signals.__anext__()
            logger.info(
                "%s: no new transactions; waiting up to %.1f s for %d live ones",
                signal.Signals(received).name,
                grace,
                proxy.unanswered,
            )
            proxy.stop_accepting()
            with trio.move_on_after(grace):
                await proxy.all_answered()
            if proxy.unanswered:
                logger.warning("cancelling %d unanswered transactions", proxy.unanswered)
            nursery.cancel_scope.cancel()
    logger.info("stopped")


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
