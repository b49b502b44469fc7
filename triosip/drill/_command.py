"""``triosip check ROUTES...``: load each file (the static checks), then drill it, and
print a table per file. Exit 0 when every line passed, 1 when one failed, 2 when a file
does not load."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import trio
import trio.testing
from rich.console import Console

from triosip.drill._faults import FAULTS
from triosip.drill._report import drill_table
from triosip.drill._run import DrillSettings, drill_fault
from triosip.drill._verdict import Verdict, judge
from triosip.script import load_routes

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from triosip.drill._faults import Fault
    from triosip.drill._run import Observed

EXIT_OK = 0
EXIT_FAILED = 1

# How long, beyond the long fr_timeout, one call of the drill may take on its clock.
GUARD = 200.0

# The stand-ins a --define may name; the drill puts its own in their place.
STAND_INS = ("@callee", "@http", "@program")


def check_routes(
    paths: Sequence[str],
    defines: Mapping[str, str],
    *,
    db_url: str | None = None,
    short_fr: float = 0.2,
    long_fr: float = 10.0,
    stall: float = 0.1,
    faults: Sequence[str] = (),
    console: Console | None = None,
) -> int:
    """Check and drill each routes file of `paths`, print a table per file.

    Args:
        paths: the routes files.
        defines: the script parameters, as ``--define`` gives them; ``@callee``,
            ``@http`` and ``@program`` stand for the drill's own callee, HTTP server and
            program.
        db_url: the database behind ``req.db``; a fresh sqlite file when None.
        short_fr: the fr_timeout of the faults that let it fire, seconds.
        long_fr: the fr_timeout of the others, seconds.
        stall: the longest task step allowed, seconds.
        faults: the names of the faults to inject (`FAULTS`); all when empty.
        console: where the tables go; standard output when None.

    Returns:
        0 when every line passed, 1 when one failed.

    Raises:
        RoutesLoadError: a file does not load (the static checks), with one line.
        ValueError: `faults` names no fault of the drill.
    """
    known = {fault.name: fault for fault in FAULTS}
    unknown = [name for name in faults if name not in known]
    if unknown:
        raise ValueError(f"no fault {unknown[0]!r}; the faults are {', '.join(known)}")
    chosen = tuple(known[name] for name in faults) or FAULTS
    # The static part first, for every file: a file that can't load is exit 2, drilled
    # or not. The stand-ins are values like any other here.
    for path in paths:
        load_routes(path, defines)
    console = console or Console()
    # The routes log what they do under the faults (timeouts, failures): the table says it.
    quiet = logging.getLogger("triosip")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        with tempfile.TemporaryDirectory(prefix="triosip-check-") as work:
            settings = DrillSettings(
                short_fr=short_fr,
                long_fr=long_fr,
                stall=stall,
                db_url=db_url or f"sqlite:///{Path(work) / 'drill.sqlite'}",
                work=Path(work),
            )
            failed = [_drill_file(Path(path), defines, chosen, settings, console) for path in paths]
    finally:
        quiet.setLevel(level)
    return EXIT_FAILED if any(failed) else EXIT_OK


def _drill_file(
    path: Path,
    defines: Mapping[str, str],
    faults: Sequence[Fault],
    settings: DrillSettings,
    console: Console,
) -> bool:
    """Drill one file and print its table; whether a line failed."""
    # A clock at the rate of the real one, that the drill jumps to end what only lingers
    # on a timer (a branch's Timer D) instead of waiting for it.
    clock = trio.testing.MockClock(rate=1.0)
    lines = trio.run(_drill, path, defines, faults, settings, clock=clock)
    console.print(drill_table(path, lines))
    return any(verdict.failed for _, verdict in lines)


async def _drill(
    path: Path, defines: Mapping[str, str], faults: Sequence[Fault], settings: DrillSettings
) -> list[tuple[Observed, Verdict]]:
    lines = []
    for fault in faults:
        # A call is answered, ended and cleaned up well within this, on the drill's clock
        # (which jumps over the lingering Timer D: a few times 33 s).
        with trio.fail_after(settings.long_fr + GUARD):
            observed = await drill_fault(path, defines, fault, settings)
        lines.append((observed, judge(observed, stall_limit=settings.stall)))
    return lines
