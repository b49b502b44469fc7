"""The contexts routes act on, one class per route kind: what ``req`` is in a route.

`RequestContext` (request, failure and resume routes) works on a `RouteTarget`: the
request and what can be done with it with or without a transaction; what only a
transaction can do goes through its `ProxyTransaction`, which a stateless request (the
ACK of a 2xx) has none of. `ReplyContext`, `BranchContext`, `ReportContext` and
`ErrorContext` serve the other route kinds. Every one but the error route's runs ops
(`_RouteContext`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast, overload

import trio

from triosip.log import LogPrefix
from triosip.ops import Database, Op, OpError, RestClient
from triosip.proxy import (
    Branch,
    NextHop,
    ProxyTransaction,
    RoutingError,
    RunningRoute,
    parse_destination,
    route_name,
)
from triosip.script._message_view import MessageView
from triosip.script._runner import (
    OpLike,
    ScriptEnvironment,
    ScriptError,
    as_op,
    run_ops,
    task_name,
)

if TYPE_CHECKING:
    from triosip.proxy import BadMessage, Proxy, RouteTarget
    from triosip.sip import ParseError, Request, Response
    from triosip.transport import Address

logger = logging.getLogger("triosip.script")

T = TypeVar("T")
T2 = TypeVar("T2")
T3 = TypeVar("T3")
T4 = TypeVar("T4")

# Where a route's ops start: its `RunningRoute` (which opens their nursery once the route
# has returned), or a nursery of their own (an onreply or report route's).
OpStarter = RunningRoute | trio.Nursery


class _RouteLog(logging.LoggerAdapter[logging.Logger]):
    """The routes' logger: each line starts with the Call-ID and branch it is about."""

    def __init__(self, prefix: LogPrefix | str) -> None:
        super().__init__(logger, {"prefix": prefix})

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        # Only called for a line the level lets through: the fields cost nothing else.
        assert self.extra is not None
        prefix = self.extra["prefix"]
        if isinstance(prefix, LogPrefix):
            kwargs["extra"] = {"call_id": prefix.call_id, "branch": prefix.branch}
        return f"{prefix} {msg}", kwargs


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
        ops: OpStarter | None,
        log_prefix: LogPrefix | str | None,
    ) -> None:
        self.params = params
        self.result: Any = None
        self.error: OpError | None = None
        self._environment = environment
        self._ops = ops
        self._log_prefix = log_prefix

    @functools.cached_property
    def log(self) -> _RouteLog:
        """A logger whose lines start with the Call-ID and branch (made when first used:
        most routes log nothing)."""
        return _RouteLog(self._prefix())

    def _prefix(self) -> LogPrefix | str:
        assert self._log_prefix is not None
        return self._log_prefix

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

        The route should return right after: the work starts once it has (at once in a
        resume route, whose work joins that of its route). When the work ends, `resume`
        runs in the same transaction with this context, its variables and edits, plus
        ``.result`` or ``.error``. A CANCEL or the fr timer cancels the work and `resume`
        does not run.

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
        # A shallow copy, as copy.copy makes, without its reduce protocol (µs per resume).
        resumed = object.__new__(type(self))
        resumed.__dict__.update(self.__dict__)
        try:
            results = await run_ops(ops, timeout)
        except OpError as exc:
            self.log.info("%s; resuming in %s", exc, route_name(resume))
            resumed.result, resumed.error = None, exc
        else:
            resumed.result, resumed.error = (results if several else results[0]), None
        # What it raises goes up to the proxy, whose one line names the resume route.
        await resume(resumed)

    async def call(self, work: Op[T] | Callable[[], T], *, timeout: float | None = None) -> T:
        """Run `work` and return its result; the route waits, keeping its locals.

        The same as ``await op``, plus a timeout and plain functions. The result has the
        op's type (``req.db.query`` gives rows, ``req.rest.get`` a `RestResponse`), so an
        editor completes it.

        Raises:
            OpError: the work failed (`OpFailed`) or passed `timeout` (`OpTimeout`).
        """
        [result] = await run_ops([as_op(work)], timeout)
        return cast("T", result)

    @overload
    async def gather(
        self, first: Op[T] | Callable[[], T], /, *, timeout: float | None = None
    ) -> tuple[T]: ...
    @overload
    async def gather(
        self,
        first: Op[T] | Callable[[], T],
        second: Op[T2] | Callable[[], T2],
        /,
        *,
        timeout: float | None = None,
    ) -> tuple[T, T2]: ...
    @overload
    async def gather(
        self,
        first: Op[T] | Callable[[], T],
        second: Op[T2] | Callable[[], T2],
        third: Op[T3] | Callable[[], T3],
        /,
        *,
        timeout: float | None = None,
    ) -> tuple[T, T2, T3]: ...
    @overload
    async def gather(
        self,
        first: Op[T] | Callable[[], T],
        second: Op[T2] | Callable[[], T2],
        third: Op[T3] | Callable[[], T3],
        fourth: Op[T4] | Callable[[], T4],
        /,
        *,
        timeout: float | None = None,
    ) -> tuple[T, T2, T3, T4]: ...
    @overload
    async def gather(  # five or more: untyped
        self,
        first: OpLike,
        second: OpLike,
        third: OpLike,
        fourth: OpLike,
        fifth: OpLike,
        /,
        *more: OpLike,
        timeout: float | None = None,
    ) -> tuple[Any, ...]: ...
    async def gather(self, *work: OpLike, timeout: float | None = None) -> tuple[Any, ...]:
        """Run several ops at once and return their results, in order, as a tuple typed
        op by op (``rows, answer = await req.gather(query, request)``: a list of rows and
        a `RestResponse`).

        Raises:
            OpError: the first op that failed (the others were cancelled first), or
                `OpTimeout` when `timeout` passed.
        """
        return tuple(await run_ops([as_op(w) for w in work], timeout))

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
                context.log.exception("report route %s raised", route_name(report))

        self._environment.launch(op, run_and_report)

    @property
    def vars(self) -> dict[str, Any]:
        """Per-transaction variables (OpenSIPS's AVPs)."""
        raise NotImplementedError


class RequestContext(MessageView, _RouteContext):
    """What the request route (and the failure and resume routes) act on: one request,
    with its transaction, or without one (the ACK of a 2xx: ``is_stateless``).

    Args:
        target: the request, and what a route can do with it with or without a
            transaction (`RouteTarget`).
        params: the script parameters.
        environment: what the routes reach beyond the transaction.
        ops: where async_() starts ops (`OpStarter`); None where there is none.
        transaction: the request's transaction, for what only a transaction can do
            (reply, arm routes, fr timers); None for a request that has none.
        source: where the request came from.
    """

    def __init__(
        self,
        target: RouteTarget,
        params: Mapping[str, str],
        environment: ScriptEnvironment,
        ops: OpStarter | None,
        *,
        transaction: ProxyTransaction | None,
        source: Address,
    ) -> None:
        super().__init__(params, environment, ops, None)
        self._target = self._holder = target
        self._tx = transaction
        self._source = source

    def _prefix(self) -> LogPrefix | str:
        return self._target.log_prefix()

    @property
    def vars(self) -> dict[str, Any]:
        """Per-transaction variables: they survive into the failure, onreply and branch
        routes of the same transaction."""
        return self._target.vars

    @property
    def ruri_is_myself(self) -> bool:
        """Whether the Request-URI names this proxy (Kamailio's ``uri == myself``)."""
        return self._target.proxy.is_myself(self._target.request.uri)

    @property
    def is_stateless(self) -> bool:
        """True for the ACK of a 2xx, which has no transaction: relay() sends it once."""
        return self._tx is None

    @property
    def source(self) -> Address:
        """Where the request came from ($si, $sp, $proto)."""
        return self._source

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

        A request with no `destination` and no Route whose Request-URI names this proxy
        has nowhere to go but back to the proxy itself: it is not sent (it would come back
        as a loop, RFC 3261 §16.3 step 4), and a line says why; nor is one whose
        `destination` is an address the proxy listens on.

        Returns:
            True once the request is on its way; False if it can't be forwarded (no route
            to the destination, nowhere but ourselves, already answered, CANCELled) — the
            route may then reply.

        Raises:
            ScriptError: `destination` is malformed.
        """
        hop: NextHop | None = None
        if destination is not None:
            try:
                hop = parse_destination(destination)
            except RoutingError as exc:
                raise ScriptError(exc.reason) from None
            if (hop.host, hop.port) in self._target.proxy.own_addresses:
                # RFC 3261 §16.3 step 4: sent to ourselves it would come back as a loop
                # (482), or spiral until Max-Forwards ran out: say so, and send nothing.
                self.log.info(
                    "cannot relay %s to %s: that is an address of this proxy",
                    self.method,
                    destination,
                )
                return False
        elif not self._target.request.route and self.ruri_is_myself:
            self.log.info(
                "cannot relay %s: it has no Route and its Request-URI names this proxy",
                self.method,
            )
            return False
        return await self._target.relay(hop)

    async def relay_in_dialog(self, fallback: str | None = None) -> bool:
        """Relay a request within a dialog (one with a To tag), as Kamailio's and
        OpenSIPS's sample configs do (``if (has_totag()) { if (loose_route()) ... }``).

        The Route entries naming us go (`loose_route`); the request then follows the rest
        of its Route set, else goes to its Request-URI, the remote target (RFC 3261
        §12.2.1.1) — unless that names this proxy: its UA ignored our Record-Route (sipp's
        built-in uac does) and sent it where it sent the dialog's first request. It then
        goes to `fallback`, where that request went. A request that can't be relayed is
        answered 404 "Not Here", as the sample configs' ``sl_send_reply("404", "Not
        here")`` does; an ACK, which can't be answered, is dropped. A line says why.

        Args:
            fallback: the next hop (``udp:10.0.0.1:5060``...) of a request with no Route
                that names this proxy, typically where new requests go (a ``downstream``
                parameter); None refuses such a request.

        Returns:
            True once the request is on its way; False when it was refused.

        Raises:
            ScriptError: the request has no To tag (relay() it), or `fallback` is malformed.
        """
        target = self._target
        if target.request.to.tag is None:
            raise ScriptError(
                f"relay_in_dialog() needs a request with a To tag; this {self.method} has "
                "none: use relay()"
            )
        target.loose_route()
        # Our own entries gone (one, or two when we record-routed twice), no Route left
        # and a Request-URI naming us: relayed as it is, it would come back to us.
        request = target.request
        if not request.route and target.proxy.is_myself(request.uri):
            relayed = await self.relay(fallback)
        else:
            # What relay(None) would do, without asking the same again.
            relayed = await target.relay(None)
        if relayed:
            return True
        tx = self._tx
        if tx is not None and not tx.final_sent and not tx.is_cancelled():
            await tx.reply(404, "Not Here")
        return False

    def record_route(self) -> None:
        """Add our Record-Route (two, when the request leaves on another listener), so
        that the dialog's later requests come through us (rr's record_route)."""
        self._target.record_route_requested = True

    def loose_route(self) -> bool:
        """Remove the Route entries that name us (rr's loose_route).

        Returns:
            Whether the request had a Route set: an in-dialog request to relay along it.
        """
        return self._target.loose_route()

    def on_failure(self, route: Callable[[FailureContext], Awaitable[None]]) -> None:
        """Arm `route` to run if every branch fails (t_on_failure); it runs once."""
        tx = self._transaction("arm a failure route on")
        params, environment = self.params, self._environment

        async def run_failure(proxy_tx: ProxyTransaction, best: Response) -> None:
            ops = proxy_tx.route_ops
            await route(FailureContext(proxy_tx, params, environment, ops, best))

        run_failure.__qualname__ = route_name(route)  # the MI and the logs show the route
        tx.failure_route = run_failure

    def on_reply(self, route: Callable[[ReplyContext], Awaitable[None]]) -> None:
        """Arm `route` to run for every response of this transaction (t_on_reply)."""
        tx = self._transaction("arm an onreply route on")
        params, environment = self.params, self._environment

        async def run_reply(proxy_tx: ProxyTransaction, branch: Branch, response: Response) -> bool:
            # A nursery of its own: the verdict is read once its resume routes (which may
            # drop() too) have ended.
            async with trio.open_nursery() as ops:
                context = ReplyContext(proxy_tx, params, environment, ops, branch, response)
                await route(context)
            return not context.dropped

        run_reply.__qualname__ = route_name(route)
        tx.reply_route = run_reply

    def on_branch(self, route: Callable[[BranchContext], Awaitable[None]]) -> None:
        """Arm `route` to run for each new branch before it is sent (t_on_branch)."""
        tx = self._transaction("arm a branch route on")
        params, environment = self.params, self._environment

        async def run_branch(proxy_tx: ProxyTransaction, branch: Branch) -> None:
            ops = proxy_tx.route_ops
            await route(BranchContext(proxy_tx, params, environment, ops, branch))

        run_branch.__qualname__ = route_name(route)
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
        if self._tx is None:
            raise ScriptError(f"cannot {what} an ACK: it has no transaction")
        return self._tx


class FailureContext(RequestContext):
    """The failure route's view: the request, and the best failure response so far."""

    def __init__(
        self,
        tx: ProxyTransaction,
        params: Mapping[str, str],
        environment: ScriptEnvironment,
        ops: OpStarter,
        response: Response,
    ) -> None:
        super().__init__(
            tx, params, environment, ops, transaction=tx, source=tx.server.inbound.source
        )
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
        ops: OpStarter,
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


class BranchContext(MessageView, _RouteContext):
    """The branch route's view: the request of one new branch, editable for it alone."""

    def __init__(
        self,
        tx: ProxyTransaction,
        params: Mapping[str, str],
        environment: ScriptEnvironment,
        ops: OpStarter,
        branch: Branch,
    ) -> None:
        super().__init__(params, environment, ops, tx.log_prefix())
        self._tx = tx
        self._holder = branch
        self.branch_index = branch.index

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
