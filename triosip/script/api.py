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
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from triosip.proxy import (
    Branch,
    NextHop,
    ProxyTransaction,
    RoutingError,
    StatelessRequest,
    parse_destination,
)
from triosip.sip import ParseError, Request, Response

if TYPE_CHECKING:
    from triosip.proxy import BadMessage, Proxy
    from triosip.transport import Address

__all__ = [
    "BranchContext",
    "ErrorContext",
    "FailureContext",
    "ParseError",
    "ReplyContext",
    "Request",
    "RequestContext",
    "Response",
    "Routes",
    "ScriptError",
]

logger = logging.getLogger("triosip.script")

RouteT = TypeVar("RouteT", bound=Callable[..., Awaitable[Any]])


class ScriptError(Exception):
    """A route asked for something that can't be done (replying to an ACK, say)."""


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


class RequestContext(_MessageView):
    """What the request route (and the failure route) acts on: one request, usually one
    transaction."""

    def __init__(self, tx: ProxyTransaction | StatelessRequest, params: Mapping[str, str]) -> None:
        self._tx = tx
        self.params = params
        self.log = logging.LoggerAdapter(logger, {"call_id": tx.request.call_id})

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
        params = self.params

        async def run_failure(proxy_tx: ProxyTransaction, best: Response) -> None:
            await route(FailureContext(proxy_tx, params, best))

        run_failure.__qualname__ = route.__qualname__
        tx.failure_route = run_failure

    def on_reply(self, route: Callable[[ReplyContext], Awaitable[None]]) -> None:
        """Arm `route` to run for every response of this transaction (t_on_reply)."""
        tx = self._transaction("arm an onreply route on")
        params = self.params

        async def run_reply(proxy_tx: ProxyTransaction, branch: Branch, response: Response) -> bool:
            context = ReplyContext(proxy_tx, params, branch, response)
            await route(context)
            return not context.dropped

        run_reply.__qualname__ = route.__qualname__
        tx.reply_route = run_reply

    def on_branch(self, route: Callable[[BranchContext], Awaitable[None]]) -> None:
        """Arm `route` to run for each new branch before it is sent (t_on_branch)."""
        tx = self._transaction("arm a branch route on")
        params = self.params

        async def run_branch(proxy_tx: ProxyTransaction, branch: Branch) -> None:
            await route(BranchContext(proxy_tx, params, branch))

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

    def __init__(self, tx: ProxyTransaction, params: Mapping[str, str], response: Response) -> None:
        super().__init__(tx, params)
        self.response = response

    @property
    def status(self) -> int:
        """The status of the best failure response (408 when the fr timer fired)."""
        return self.response.status


class ReplyContext:
    """The onreply route's view: one response on its way back."""

    def __init__(
        self, tx: ProxyTransaction, params: Mapping[str, str], branch: Branch, response: Response
    ) -> None:
        self._tx = tx
        self.params = params
        self.branch_index = branch.index
        self.response = response
        self.dropped = False
        self.log = logging.LoggerAdapter(logger, {"call_id": response.call_id})

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

    def drop(self) -> None:
        """Don't forward this provisional response (drop() in an onreply route)."""
        self.dropped = True


class BranchContext(_MessageView):
    """The branch route's view: the request of one new branch, editable for it alone."""

    def __init__(self, tx: ProxyTransaction, params: Mapping[str, str], branch: Branch) -> None:
        self._tx = tx
        self._branch = branch
        self.params = params
        self.branch_index = branch.index
        self.log = logging.LoggerAdapter(logger, {"call_id": tx.request.call_id})

    @property
    def _request(self) -> Request:
        return self._branch.request

    @_request.setter
    def _request(self, value: Request) -> None:
        self._branch.request = value

    @property
    def vars(self) -> dict[str, Any]:
        return self._tx.vars


class ErrorContext:
    """The error route's view: bytes that failed to parse, and why."""

    def __init__(self, proxy: Proxy, bad: BadMessage, params: Mapping[str, str]) -> None:
        self._proxy = proxy
        self._bad = bad
        self.params = params
        self.replied = False
        self.log = logger

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
