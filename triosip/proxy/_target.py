"""What a request route acts on, with a transaction or without one: `RouteTarget`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from triosip.log import LogPrefix
    from triosip.proxy._forward import NextHop
    from triosip.proxy._port import ProxyPort
    from triosip.sip import Request


class RouteTarget(Protocol):
    """The request the request route runs for, and what the route may do with it.

    Both kinds of request a route sees have these: a `ProxyTransaction` (a request with a
    server transaction) and a `StatelessRequest` (the ACK of a 2xx, which has none: RFC
    3261 §17.2.3). What only a transaction can do (reply, arm failure, onreply and branch
    routes, set its fr timers) belongs to `ProxyTransaction` alone: the script layer is
    handed it apart, or None for a stateless request.

    Attributes:
        request: the request as the routes have it now; replaced to edit it.
        vars: per-transaction variables (OpenSIPS's AVPs).
        record_route_requested: whether the request leaves with our Record-Route.
    """

    request: Request
    vars: dict[str, Any]
    record_route_requested: bool

    @property
    def proxy(self) -> ProxyPort:
        """The proxy the request came to (its addresses: `is_myself`)."""
        ...

    def log_prefix(self) -> LogPrefix:
        """The Call-ID and branch that start each log line about this request."""
        ...

    def loose_route(self) -> bool:
        """Remove the Route entries that name this proxy (RFC 3261 §16.4); whether the
        request carried a Route set."""
        ...

    async def relay(self, destination: NextHop | None = None) -> bool:
        """Forward the request to `destination`, else along its Route set, else to its
        Request-URI; False (logged) when it can't go."""
        ...
