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
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeVar

import trio

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
from triosip.proxy import (
    Branch,
    NextHop,
    ProxyTransaction,
    RoutingError,
    StatelessRequest,
    parse_destination,
)
from triosip.script._runner import (
    OpLike,
    ScriptEnvironment,
    ScriptError,
    as_op,
    run_ops,
    task_name,
)
from triosip.sip import ParseError, Request, Response

if TYPE_CHECKING:
    from triosip.proxy import BadMessage, Proxy
    from triosip.transport import Address

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

logger = logging.getLogger("triosip.script")

RouteT = TypeVar("RouteT", bound=Callable[..., Awaitable[Any]])


class Routes:
    """The routes of one routes file, registered with its decorators."""

    def __init__(self) -> None:
        self.request_route: Callable[[RequestContext], Awaitable[None]] | None = None
        self.error_route: Callable[[ErrorContext], Awaitable[None]] | None = None
        self.named: dict[str, Callable[..., Awaitable[Any]]] = {}
        self.params: Mapping[str, str] = {}

    def request(
        self, route: Callable[[RequestContext], Awaitable[None]]
    ) -> Callable[[RequestContext], Awaitable[None]]:
        """Register the request route (exactly one per file)."""
        if self.request_route is not None:
            raise ScriptError(
                f"two request routes: {self.request_route.__name__}, {route.__name__}"
            )
        self.request_route = route
        return route

    def error(
        self, route: Callable[[ErrorContext], Awaitable[None]]
    ) -> Callable[[ErrorContext], Awaitable[None]]:
        """Register the error route, for messages that fail to parse."""
        self.error_route = route
        return route

    def route(self, route: RouteT) -> RouteT:
        """Register a named route (failure, onreply, branch or the script's own)."""
        self.named[route.__name__] = route
        return route

    failure = route
    onreply = route
    branch = route
    resume = route
    report = route


class _RouteLog(logging.LoggerAdapter[logging.Logger]):
    """The routes' logger: each line starts with the Call-ID and branch it is about."""

    def __init__(self, prefix: str) -> None:
        super().__init__(logger, {"prefix": prefix})

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        assert self.extra is not None
        return f"{self.extra['prefix']} {msg}", kwargs


class _RouteContext:
    """What every route's context shares: params, log, resources, and running ops.

    Attributes:
        params: the script parameters (``--define NAME=VALUE``).
        log: a logger whose lines name the Call-ID and branch.
        result: in a resume or report route, the op's result (a list for several ops).
        error: in a resume or report route, the op's `OpError` (failure or timeout), else
            None. A resume route always sees one of the two: never a silent None.
    """

    def __init__(
        self,
        params: Mapping[str, str],
        environment: ScriptEnvironment,
        ops: trio.Nursery | None,
        log_prefix: str,
    ) -> None:
        self.params = params
        self.log = _RouteLog(log_prefix)
        self.result: Any = None
        self.error: OpError | None = None
        self._environment = environment
        self._ops = ops

    @property
    def db(self) -> Database:
        """The database (``triosip run --db``): ``req.db.query(sql, params)`` is an op."""
        if self._environment.db is None:
            raise ScriptError("this proxy runs without a database")
        return self._environment.db

    @property
    def rest(self) -> RestClient:
        """The shared HTTP client: ``req.rest.get(url)`` is an op."""
        if self._environment.rest is None:
            raise ScriptError("this proxy runs without a REST client")
        return self._environment.rest

    def async_(
        self,
        work: OpLike | Sequence[OpLike],
        *,
        resume: Callable[[Self], Awaitable[None]],
        timeout: float | None = None,
    ) -> None:
        """Start `work` and return at once (OpenSIPS's ``async(f, resume_route, timeout)``).

        The route should return right after. When the work ends, `resume` runs in the same
        transaction with this context, its variables and edits, plus ``.result`` or
        ``.error``. A CANCEL or the fr timer cancels the work and `resume` does not run.

        Args:
            work: an op, a plain blocking function (run in a worker thread), or a list of
                them to run at once (``.result`` is then the list of results).
            resume: the route to run when the work ends.
            timeout: seconds the work may take, as a float; None for no limit of its own.

        Raises:
            ScriptError: `work` is not an op, or this route has no transaction to run it in.
        """
        if isinstance(work, str):  # a Sequence, but of characters
            raise ScriptError(f"{work!r} is a str, not an op: pass req.db.query({work!r})")
        several = isinstance(work, Sequence)
        ops = [as_op(w) for w in work] if isinstance(work, Sequence) else [as_op(work)]
        if not ops:
            raise ScriptError("async_() needs at least one op")
        if self._ops is None:
            raise ScriptError("async_() needs a route of a transaction; await the op instead")
        name = task_name("op", ops[0]) if len(ops) == 1 else f"ops gather({len(ops)})"
        self._ops.start_soon(self._resume_after, ops, several, resume, timeout, name=name)

    async def _resume_after(
        self,
        ops: list[Op[Any]],
        several: bool,
        resume: Callable[[Self], Awaitable[None]],
        timeout: float | None,
    ) -> None:
        resumed = copy.copy(self)
        try:
            results = await run_ops(ops, timeout)
        except OpError as exc:
            self.log.info("%s; resuming in %s", exc, _route_name(resume))
            resumed.result, resumed.error = None, exc
        else:
            resumed.result, resumed.error = (results if several else results[0]), None
        try:
            await resume(resumed)
        except Exception:
            # Name the resume route here: above, only the route that started the op shows.
            self.log.warning("resume route %s raised", _route_name(resume))
            raise

    async def call(self, work: OpLike, *, timeout: float | None = None) -> Any:
        """Run `work` and return its result; the route waits, keeping its locals.

        The same as ``await op``, plus a timeout and plain functions.

        Raises:
            OpError: the work failed (`OpFailed`) or passed `timeout` (`OpTimeout`).
        """
        [result] = await run_ops([as_op(work)], timeout)
        return result

    async def gather(self, *work: OpLike, timeout: float | None = None) -> list[Any]:
        """Run several ops at once and return their results, in order.

        Raises:
            OpError: the first op that failed (the others were cancelled first), or
                `OpTimeout` when `timeout` passed.
        """
        return await run_ops([as_op(w) for w in work], timeout)

    def launch(
        self,
        work: OpLike,
        *,
        report: Callable[[ReportContext], Awaitable[None]] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Start work that outlives the transaction (OpenSIPS's ``launch``).

        The work runs in the proxy's own nursery, not the transaction's: a CANCEL does not
        stop it; shutdown does. When it ends, `report` runs with a `ReportContext` (a copy
        of the variables, ``.result`` or ``.error``); with no `report`, a failure is logged.

        Raises:
            ScriptError: too many launched ops run already (the bound is the proxy's).
        """
        op = as_op(work)
        context = ReportContext(self.params, self._environment, dict(self.vars), self.log)

        async def run_and_report() -> None:
            try:
                [context.result] = await run_ops([op], timeout)
            except OpError as exc:
                context.error = exc
                if report is None:
                    context.log.warning("launched %s", exc)
            except Exception:
                context.log.exception("launched %r raised", op)
                return
            if report is None:
                return
            try:
                async with trio.open_nursery() as ops:
                    context._ops = ops
                    await report(context)
            except Exception:
                context.log.exception("report route %s raised", _route_name(report))

        self._environment.launch(op, run_and_report)

    @property
    def vars(self) -> dict[str, Any]:
        """Per-transaction variables (OpenSIPS's AVPs)."""
        raise NotImplementedError


class _MessageView:
    """What request contexts share: reading and editing the current request."""

    _request: Request

    @property
    def request(self) -> Request:
        """The request as the route has it now (edits included)."""
        return self._request

    @property
    def method(self) -> str:
        return self._request.method

    @property
    def ruri(self) -> str:
        """The Request-URI; assign to rewrite it ($ru)."""
        return str(self._request.uri)

    @ruri.setter
    def ruri(self, value: str) -> None:
        self._request = self._request.with_uri(value)

    @property
    def ruri_user(self) -> str | None:
        return self._request.uri.user

    @property
    def ruri_domain(self) -> str:
        return self._request.uri.host

    @property
    def from_user(self) -> str | None:
        return self._request.from_.uri.user

    @property
    def from_domain(self) -> str:
        return self._request.from_.uri.host

    @property
    def from_tag(self) -> str | None:
        return self._request.from_.tag

    @property
    def to_user(self) -> str | None:
        return self._request.to.uri.user

    @property
    def to_domain(self) -> str:
        return self._request.to.uri.host

    @property
    def to_tag(self) -> str | None:
        return self._request.to.tag

    @property
    def has_to_tag(self) -> bool:
        """Whether the request is within a dialog (has_totag)."""
        return self._request.to.tag is not None

    @property
    def call_id(self) -> str:
        return self._request.call_id

    def header(self, name: str) -> str | None:
        """The value of the first header of that name, or None ($hdr(name))."""
        return self._request.header(name)

    def headers(self, name: str) -> list[str]:
        """Every comma-separated value of that header, over all its lines."""
        return self._request.header_values(name)

    def add_header(self, name: str, value: str, *, first: bool = False) -> None:
        """Add a header line (append_hf / insert_hf)."""
        if first:
            self._request = self._request.with_header_first(name, value)
        else:
            self._request = self._request.with_header_last(name, value)

    def remove_header(self, name: str) -> None:
        """Remove every line of that header (remove_hf)."""
        self._request = self._request.without_header(name)


class RequestContext(_MessageView, _RouteContext):
    """What the request route (and the failure and resume routes) act on: one request,
    usually one transaction."""

    def __init__(
        self,
        tx: ProxyTransaction | StatelessRequest,
        params: Mapping[str, str],
        environment: ScriptEnvironment,
        ops: trio.Nursery | None,
    ) -> None:
        super().__init__(params, environment, ops, tx.log_prefix())
        self._tx = tx

    @property
    def _request(self) -> Request:
        return self._tx.request

    @_request.setter
    def _request(self, value: Request) -> None:
        self._tx.request = value

    @property
    def vars(self) -> dict[str, Any]:
        """Per-transaction variables: they survive into the failure, onreply and branch
        routes of the same transaction."""
        return self._tx.vars

    @property
    def ruri_is_myself(self) -> bool:
        """Whether the Request-URI names this proxy (Kamailio's ``uri == myself``)."""
        return self._tx.proxy.is_myself(self._request.uri)

    @property
    def is_stateless(self) -> bool:
        """True for the ACK of a 2xx, which has no transaction: relay() sends it once."""
        return isinstance(self._tx, StatelessRequest)

    @property
    def source(self) -> Address:
        """Where the request came from ($si, $sp, $proto)."""
        if isinstance(self._tx, StatelessRequest):
            return self._tx.inbound.source
        return self._tx.server.inbound.source

    async def reply(
        self, status: int, reason: str | None = None, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Answer the request (t_reply / sl_send_reply).

        Raises:
            ScriptError: the request is an ACK, or a final answer went out already.
        """
        tx = self._transaction("reply to")
        if tx.final_sent and status >= 200:
            raise ScriptError(f"cannot reply {status}: a final response was sent already")
        await tx.reply(status, reason, tuple((headers or {}).items()))

    async def relay(self, destination: str | None = None) -> bool:
        """Forward the request (t_relay): to `destination` (``udp:10.0.0.1:5060``,
        ``tcp:[::1]:5080``, ``sip:host;transport=tcp``), else along its Route set, else to
        its Request-URI.

        Returns:
            True once the request is on its way; False if it can't be forwarded (no route
            to the destination, already answered, CANCELled) — the route may then reply.

        Raises:
            ScriptError: `destination` is malformed.
        """
        hop: NextHop | None = None
        if destination is not None:
            try:
                hop = parse_destination(destination)
            except RoutingError as exc:
                raise ScriptError(exc.reason) from None
        return await self._tx.relay(hop)

    def record_route(self) -> None:
        """Add our Record-Route (two, when the request leaves on another listener), so
        that the dialog's later requests come through us (rr's record_route)."""
        self._tx.record_route_requested = True

    def loose_route(self) -> bool:
        """Remove the Route entries that name us (rr's loose_route).

        Returns:
            Whether the request had a Route set: an in-dialog request to relay along it.
        """
        return self._tx.loose_route()

    def on_failure(self, route: Callable[[FailureContext], Awaitable[None]]) -> None:
        """Arm `route` to run if every branch fails (t_on_failure); it runs once."""
        tx = self._transaction("arm a failure route on")
        params, environment = self.params, self._environment

        async def run_failure(proxy_tx: ProxyTransaction, best: Response) -> None:
            async with trio.open_nursery() as ops:
                await route(FailureContext(proxy_tx, params, environment, ops, best))

        run_failure.__qualname__ = route.__qualname__
        tx.failure_route = run_failure

    def on_reply(self, route: Callable[[ReplyContext], Awaitable[None]]) -> None:
        """Arm `route` to run for every response of this transaction (t_on_reply)."""
        tx = self._transaction("arm an onreply route on")
        params, environment = self.params, self._environment

        async def run_reply(proxy_tx: ProxyTransaction, branch: Branch, response: Response) -> bool:
            async with trio.open_nursery() as ops:
                context = ReplyContext(proxy_tx, params, environment, ops, branch, response)
                await route(context)
            return not context.dropped

        run_reply.__qualname__ = route.__qualname__
        tx.reply_route = run_reply

    def on_branch(self, route: Callable[[BranchContext], Awaitable[None]]) -> None:
        """Arm `route` to run for each new branch before it is sent (t_on_branch)."""
        tx = self._transaction("arm a branch route on")
        params, environment = self.params, self._environment

        async def run_branch(proxy_tx: ProxyTransaction, branch: Branch) -> None:
            async with trio.open_nursery() as ops:
                await route(BranchContext(proxy_tx, params, environment, ops, branch))

        run_branch.__qualname__ = route.__qualname__
        tx.branch_route = run_branch

    @property
    def fr_timeout(self) -> float:
        """tm's fr_timeout for this transaction, in seconds (settable)."""
        return self._transaction("time").fr_timeout

    @fr_timeout.setter
    def fr_timeout(self, seconds: float) -> None:
        self._transaction("time").set_fr_timeout(seconds)

    @property
    def fr_inv_timeout(self) -> float:
        """tm's fr_inv_timeout for this transaction, in seconds (settable)."""
        return self._transaction("time").fr_inv_timeout

    @fr_inv_timeout.setter
    def fr_inv_timeout(self, seconds: float) -> None:
        self._transaction("time").set_fr_inv_timeout(seconds)

    def _transaction(self, what: str) -> ProxyTransaction:
        if isinstance(self._tx, StatelessRequest):
            raise ScriptError(f"cannot {what} an ACK: it has no transaction")
        return self._tx


class FailureContext(RequestContext):
    """The failure route's view: the request, and the best failure response so far."""

    def __init__(
        self,
        tx: ProxyTransaction,
        params: Mapping[str, str],
        environment: ScriptEnvironment,
        ops: trio.Nursery,
        response: Response,
    ) -> None:
        super().__init__(tx, params, environment, ops)
        self.response = response

    @property
    def status(self) -> int:
        """The status of the best failure response (408 when the fr timer fired)."""
        return self.response.status


@dataclass(slots=True)
class _ReplyVerdict:
    """What an onreply route decided, shared with the copies its resume routes get."""

    dropped: bool = False


class ReplyContext(_RouteContext):
    """The onreply route's view: one response on its way back."""

    def __init__(
        self,
        tx: ProxyTransaction,
        params: Mapping[str, str],
        environment: ScriptEnvironment,
        ops: trio.Nursery,
        branch: Branch,
        response: Response,
    ) -> None:
        super().__init__(params, environment, ops, f"{response.call_id} {branch.branch}")
        self._tx = tx
        self.branch_index = branch.index
        self.response = response
        self._verdict = _ReplyVerdict()

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def reason(self) -> str:
        return self.response.reason

    @property
    def request(self) -> Request:
        return self._tx.request

    @property
    def vars(self) -> dict[str, Any]:
        return self._tx.vars

    def header(self, name: str) -> str | None:
        return self.response.header(name)

    @property
    def dropped(self) -> bool:
        """Whether the route (or a resume route of it) called `drop()`."""
        return self._verdict.dropped

    def drop(self) -> None:
        """Don't forward this provisional response (drop() in an onreply route)."""
        self._verdict.dropped = True


class BranchContext(_MessageView, _RouteContext):
    """The branch route's view: the request of one new branch, editable for it alone."""

    def __init__(
        self,
        tx: ProxyTransaction,
        params: Mapping[str, str],
        environment: ScriptEnvironment,
        ops: trio.Nursery,
        branch: Branch,
    ) -> None:
        super().__init__(params, environment, ops, tx.log_prefix())
        self._tx = tx
        self._branch = branch
        self.branch_index = branch.index

    @property
    def _request(self) -> Request:
        return self._branch.request

    @_request.setter
    def _request(self, value: Request) -> None:
        self._branch.request = value

    @property
    def vars(self) -> dict[str, Any]:
        return self._tx.vars


class ReportContext(_RouteContext):
    """The report route's view of launched work: its ``.result`` or ``.error``, and a copy
    of the variables of the transaction that launched it (which may be over by now)."""

    def __init__(
        self,
        params: Mapping[str, str],
        environment: ScriptEnvironment,
        variables: dict[str, Any],
        log: _RouteLog,
    ) -> None:
        super().__init__(params, environment, None, "")
        self.log = log
        self._vars = variables

    @property
    def vars(self) -> dict[str, Any]:
        """A copy of the launching transaction's variables, taken at launch."""
        return self._vars


class ErrorContext:
    """The error route's view: bytes that failed to parse, and why. Ops are awaited here
    (``await op``): there is no transaction to run them in."""

    def __init__(self, proxy: Proxy, bad: BadMessage, params: Mapping[str, str]) -> None:
        self._proxy = proxy
        self._bad = bad
        self.params = params
        self.replied = False
        self.log = _RouteLog(f"from {bad.source}")

    @property
    def error(self) -> ParseError:
        return self._bad.error

    @property
    def status(self) -> int:
        """What the proxy would answer: 400, or 505 for an unknown SIP version."""
        return self._bad.error.status

    @property
    def reason(self) -> str:
        return self._bad.error.reason

    @property
    def data(self) -> bytes:
        return self._bad.data

    @property
    def source(self) -> Address:
        return self._bad.source

    def drop(self) -> None:
        """Send nothing back."""
        self.replied = True


def _route_name(route: Callable[..., Any]) -> str:
    return getattr(route, "__qualname__", repr(route))
