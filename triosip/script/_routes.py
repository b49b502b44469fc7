"""The routes of a routes file: `Routes`, its decorators, and the name a route goes by."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from triosip.script._runner import ScriptError

if TYPE_CHECKING:
    from triosip.script._context import ErrorContext, RequestContext

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
