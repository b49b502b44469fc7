"""``triosip check``: the static checks of a routes file, then the cancellation drill.

Theory of operation. The static part is `triosip.script.load_routes`, the same load
``triosip run`` does: the file imports, every route is an ``async def``, every route it
names (``resume=``, ``on_failure``...) is registered, every parameter it declares
(``Routes(requires=...)``) is given. The dynamic part runs the routes in-process, one call
per fault (`_faults.FAULTS`), each through a proxy of its own started by `serve_triosip`
on 127.0.0.1, with a real caller and callee (`triosip.testing`): the callee answers,
rings or stays silent; the caller CANCELs; the fr timer fires; ops pend or fail through
`triosip.ops.op_faults`. Of each call it checks what the test suite checks of triosip
itself (`_verdict`), and prints a table per file (`_report`).

One job per module: ``_faults`` (the faults), ``_run`` (one call under one fault),
``_journal`` (which routes ran), ``_stall`` (the loop held by one step), ``_verdict``
(what passed), ``_report`` (the table), ``_command`` (the command).
"""

from __future__ import annotations

from triosip.drill._command import STAND_INS as STAND_INS
from triosip.drill._command import check_routes as check_routes
from triosip.drill._faults import FAULTS as FAULTS

__all__ = ["FAULTS", "STAND_INS", "check_routes"]
