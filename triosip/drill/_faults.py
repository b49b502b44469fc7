"""The faults of the drill: what the callee does, what the ops do, and whether the caller
CANCELs, one row each."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from triosip.testing.callee import Answer


class OpMode(enum.Enum):
    """What the drill's hook (`triosip.ops.op_faults`) makes each op do."""

    RUN = "run"  # the work runs for real
    PEND = "pend"  # it waits until cancelled: the fr timer, a CANCEL, the op's own timeout
    FAIL = "fail"  # it raises OpFailed before its work starts


@dataclass(frozen=True, slots=True)
class Fault:
    """One line of the drill.

    Attributes:
        name: the short name, as the table shows it.
        what: what is done to the call, in a few words.
        answer: how the callee answers.
        ops: what every op of the call does.
        cancel: whether the caller CANCELs once work is pending (an op, or a ringing
            branch).
        short_fr: whether the proxy runs with the drill's short fr_timeout (else a long
            one, that the fault must not reach).
        needs_op: the fault means something only if the route starts an op.
        needs_callee: the fault means something only if the route relays to the callee.
    """

    name: str
    what: str
    answer: Answer
    ops: OpMode = OpMode.RUN
    cancel: bool = False
    short_fr: bool = False
    needs_op: bool = False
    needs_callee: bool = False


FAULTS = (
    Fault("answered", "the callee answers 200", Answer(200), needs_callee=True),
    Fault(
        "cancel",
        "CANCEL while the work is pending",
        Answer(None, ring=True),
        ops=OpMode.PEND,
        cancel=True,
    ),
    Fault(
        "fr-timeout",
        "fr_timeout while the work is pending",
        Answer(None),
        ops=OpMode.PEND,
        short_fr=True,
    ),
    Fault("486", "the callee answers 486", Answer(486), needs_callee=True),
    Fault("503", "the callee answers 503", Answer(503), needs_callee=True),
    Fault("no-answer", "the callee stays silent", Answer(None), short_fr=True, needs_callee=True),
    Fault("op-fails", "every op fails (OpFailed)", Answer(200), ops=OpMode.FAIL, needs_op=True),
    Fault(
        "op-timeout",
        "every op pends past its own timeout",
        Answer(200),
        ops=OpMode.PEND,
        needs_op=True,
    ),
)
