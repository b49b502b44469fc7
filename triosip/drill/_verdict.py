"""What the drill checks of each call, as the test suite checks it of triosip itself
(docs/cancellation.md): every request gets a final response, a cancelled call's resume
route never runs, its failure route runs at most once, no route raises, none blocks the
proxy, and nothing is left behind — no task, thread, child process, fd, or pooled
connection in use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from triosip.drill._run import Observed


@dataclass(frozen=True, slots=True)
class Verdict:
    """The drill's word on one call.

    Attributes:
        problems: what failed, one phrase each; empty when the line passed.
        skipped: why the fault did not apply (the route started no op, or never relayed),
            or None.
        answer: what the caller got, e.g. ``"487"``, or ``"-"``.
    """

    problems: tuple[str, ...]
    skipped: str | None
    answer: str

    @property
    def failed(self) -> bool:
        return bool(self.problems)


def judge(observed: Observed, *, stall_limit: float) -> Verdict:
    """The `Verdict` on `observed`, with `stall_limit` the longest step allowed (s)."""
    fault = observed.fault
    problems: list[str] = []
    finals = sorted(set(observed.finals))
    if not finals:
        problems.append("no final response")
    elif len(finals) > 1:
        problems.append(f"several final responses: {', '.join(map(str, finals))}")
    # When the call was cancelled: the CANCEL, or the fr timer that fired while work
    # was pending. Nothing the route started may resume after it.
    cancelled = observed.cancelled_at
    if cancelled is None and fault.short_fr and observed.ops:
        cancelled = observed.sent_at + observed.fr  # the fr timer ended the pending op
    if cancelled is not None:
        late = [run.name for run in observed.journal.of_kind("resume") if run.at >= cancelled]
        if late:
            problems.append(f"resume route {late[0]} ran after the cancel")
    failures = observed.journal.of_kind("failure")
    if len(failures) > 1:
        problems.append(f"failure route ran {len(failures)} times")
    problems.extend(observed.journal.raised)
    if observed.stall > stall_limit:
        problems.append(
            f"blocked the proxy {observed.stall * 1000:.0f} ms (task {observed.stalled_task})"
        )
    if observed.unended:
        problems.append(f"transactions never ended: {', '.join(observed.unended)}")
    for what, items in observed.left.items():
        shown = list(items.values()) if isinstance(items, dict) else list(items)
        problems.append(f"{what} left: {', '.join(map(str, shown[:3]))}")
    problems.extend(f"{problem} after the call" for problem in observed.pools)
    skipped = None
    if fault.needs_op and not observed.ops:
        skipped = "the route started no op"
    elif fault.needs_callee and not observed.callee_reached:
        skipped = "the route never relayed to the callee"
    elif fault.cancel and not observed.cancel_sent:
        skipped = "nothing was pending to CANCEL"
    answer = ", ".join(map(str, finals)) or "-"
    return Verdict(tuple(problems), skipped if not problems else None, answer)
