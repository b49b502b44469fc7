"""The routes of a routes file: `Routes`, its decorators, and the name a route goes by."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from triosip.script._runner import ScriptError

if TYPE_CHECKING:
    from triosip.script._context import ErrorContext, RequestContext

RouteT = TypeVar("RouteT", bound=Callable[..., Awaitable[Any]])


def _check_async(route: Callable[..., Any]) -> None:
    # A plain def would be called, return None, and fail on every request ("object
    # NoneType can't be used in 'await' expression"): refuse it when the file loads.
    if not inspect.iscoroutinefunction(route):
        name = getattr(route, "__name__", repr(route))
        raise ScriptError(f"route {name} is a plain def: write `async def {name}`")


class Routes:
    """The routes of one routes file, registered with its decorators.

    Args:
        requires: the script parameters the routes cannot run without (``--define
            NAME=VALUE``); a routes file that lacks one does not load (``triosip run``
            exits 2 saying which).

    Attributes:
        requires: the parameters the routes need.
        named: the named routes (failure, onreply, branch, resume, report...), by name.
        kinds: the kind each named route was registered as (``"failure"``, ``"resume"``...).
        params: the script parameters, set when the file is loaded.
    """

    def __init__(self, *, requires: Iterable[str] = ()) -> None:
        self.request_route: Callable[[RequestContext], Awaitable[None]] | None = None
        self.error_route: Callable[[ErrorContext], Awaitable[None]] | None = None
        self.named: dict[str, Callable[..., Awaitable[Any]]] = {}
        self.kinds: dict[str, str] = {}
        self.params: Mapping[str, str] = {}
        self.requires = tuple(requires)

    def request(
        self, route: Callable[[RequestContext], Awaitable[None]]
    ) -> Callable[[RequestContext], Awaitable[None]]:
        """Register the request route (exactly one per file)."""
        _check_async(route)
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
        _check_async(route)
        self.error_route = route
        return route

    def _named(self, route: RouteT, kind: str) -> RouteT:
        _check_async(route)
        self.named[route.__name__] = route
        self.kinds[route.__name__] = kind
        return route

    def route(self, route: RouteT) -> RouteT:
        """Register a named route of the script's own."""
        return self._named(route, "route")

    def failure(self, route: RouteT) -> RouteT:
        """Register a failure route (armed with ``req.on_failure``)."""
        return self._named(route, "failure")

    def onreply(self, route: RouteT) -> RouteT:
        """Register an onreply route (armed with ``req.on_reply``)."""
        return self._named(route, "onreply")

    def branch(self, route: RouteT) -> RouteT:
        """Register a branch route (armed with ``req.on_branch``)."""
        return self._named(route, "branch")

    def resume(self, route: RouteT) -> RouteT:
        """Register a resume route (``req.async_(op, resume=route)``)."""
        return self._named(route, "resume")

    def report(self, route: RouteT) -> RouteT:
        """Register a report route (``req.launch(op, report=route)``)."""
        return self._named(route, "report")
