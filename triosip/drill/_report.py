"""The drill's table: one per routes file, a line per fault."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from pathlib import Path

    from triosip.drill._run import Observed
    from triosip.drill._verdict import Verdict


def drill_table(path: Path, lines: list[tuple[Observed, Verdict]]) -> Table:
    """The table of `path`'s drill: fault, what was done, the routes that ran, the answer,
    and ok / n/a / what failed."""
    failed = sum(verdict.failed for _, verdict in lines)
    table = Table(
        title=f"triosip check {path}: {failed} of {len(lines)} lines failed"
        if failed
        else f"triosip check {path}: ok",
        title_justify="left",
    )
    for column in ("fault", "injected", "routes run", "ops", "answer", "result"):
        table.add_column(column, overflow="fold")
    for observed, verdict in lines:
        if verdict.failed:
            result = "[red]FAIL[/red] " + "; ".join(verdict.problems)
        elif verdict.skipped is not None:
            result = f"[dim]n/a: {verdict.skipped}[/dim]"
        else:
            result = "[green]ok[/green]"
        table.add_row(
            observed.fault.name,
            observed.fault.what,
            observed.journal.path(),
            ", ".join(observed.ops) or "-",
            verdict.answer,
            result,
        )
    return table
