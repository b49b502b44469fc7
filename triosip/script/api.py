"""The API of routes files: everything a routes file imports comes from here.

A routes file is a Python module with a module-level ``routes = Routes()`` and async
route functions registered on it::

    from triosip.script.api import RequestContext, Routes

    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        req.record_route()
        await req.relay()

Route kinds, as in OpenSIPS and Kamailio:

- ``@routes.request``: the request route, run for every request but CANCEL (which the
  proxy matches and relays itself) — for the ACK of a 2xx too, statelessly
  (``req.is_stateless``).
- ``@routes.failure``: armed per transaction with ``req.on_failure(route)``; runs when every
  branch failed, with the best failure response; may relay again (serial forking).
- ``@routes.onreply``: armed with ``req.on_reply(route)``; runs for each response.
- ``@routes.branch``: armed with ``req.on_branch(route)``; runs for each new branch.
- ``@routes.error``: runs for a message that failed to parse (default: a 400).
- ``@routes.route``: any other named route, for scripts' own use.

Per-transaction variables (OpenSIPS's AVPs) live in ``req.vars`` and survive from one
route to the next. Script parameters from ``triosip run --define NAME=VALUE`` are in
``req.params``.

Async work (OpenSIPS's ``async()``, made cancellable)
-----------------------------------------------------
Ops describe work: ``req.db.query(sql, params)``, ``req.rest.get(url)``, ``exec_(argv)``,
``sleep(seconds)``, or any plain blocking function (run in a worker thread). A route runs
them in one of four ways, all inside its transaction, so that a CANCEL, the fr timer or
the transaction's end cancels them at once (the query interrupted, the connection closed,
the process group killed) and nothing of them is left behind:

- ``req.async_(op, resume=route, timeout=2.0)`` starts the op and returns; the route then
  returns, and ``route`` runs later with the same context plus ``.result`` or ``.error``
  (an `OpFailed`, or an `OpTimeout` when ``timeout`` passed). Give a list of ops to run
  them at once: ``.result`` is then the list of their results.
- ``rows = await req.db.query(...)`` (or ``await req.call(op, timeout=2.0)``): the route
  waits, and keeps its locals. An op's failure is raised as an `OpError`.
- ``a, b = await req.gather(op1, op2, timeout=2.0)``: several at once; the first failure
  cancels the others and is raised.
- ``req.launch(op, report=route)``: work that outlives the transaction (a CDR write, a
  notification); ``route`` gets a `ReportContext`. Cancelled at shutdown.

Ops work in every route type: request, failure, onreply, branch, resume and report routes.

Requests within a dialog
------------------------
A request with a To tag (a BYE, a re-INVITE, the ACK of a 200) belongs to a dialog that
the proxy saw start; ``req.relay_in_dialog(fallback)`` relays it the way Kamailio's and
OpenSIPS's sample configs do::

    if req.has_to_tag:
        await req.relay_in_dialog(req.params.get("downstream"))
        return

It removes the Route entries naming us (``loose_route``) and relays along the rest of the
Route set, else to the Request-URI. A UA that ignores Record-Route (sipp's built-in uac)
sends such requests to the proxy with no Route, as it sent the INVITE: they go to
``fallback``, where new requests go. What can't be relayed is answered 404 "Not Here"
(an ACK is dropped), with a log line saying why; it returns whether the request went.

``req.relay()`` never sends a request back to the proxy itself for want of a destination
(no Route, a Request-URI naming us): it returns False and logs why, where the request
would otherwise come back as a loop and be answered 482.

The modules behind this one
---------------------------
This module is the façade of the route API; routes files import nothing else. Behind it,
each private module has one job: ``_routes`` (the registry and its decorators),
``_context`` (what ``req`` is in each route kind), ``_message_view`` (reading and editing
the request), ``_runner`` (running ops under a timeout).
"""

from __future__ import annotations

from triosip.ops import (
    Database,
    ExecResult,
    Op,
    OpError,
    OpFailed,
    OpTimeout,
    RestClient,
    RestResponse,
    exec_,
    in_thread,
    sleep,
)
from triosip.script._context import (
    BranchContext,
    ErrorContext,
    FailureContext,
    ReplyContext,
    ReportContext,
    RequestContext,
)
from triosip.script._routes import Routes
from triosip.script._runner import ScriptError
from triosip.sip import ParseError, Request, Response

__all__ = [
    "BranchContext",
    "Database",
    "ErrorContext",
    "ExecResult",
    "FailureContext",
    "Op",
    "OpError",
    "OpFailed",
    "OpTimeout",
    "ParseError",
    "ReplyContext",
    "ReportContext",
    "Request",
    "RequestContext",
    "Response",
    "RestClient",
    "RestResponse",
    "Routes",
    "ScriptError",
    "exec_",
    "in_thread",
    "sleep",
]
