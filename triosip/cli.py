"""The ``triosip`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from triosip import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triosip",
        description="A SIP proxy on trio whose routes run async work that a transaction can cancel.",
    )
    parser.add_argument("--version", action="version", version=f"triosip {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``triosip`` command.

    Args:
        argv: the arguments, without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The process exit code: 0 on success, 2 for a usage error.
    """
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
