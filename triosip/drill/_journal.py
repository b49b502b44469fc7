"""What the routes of a call did: each route that ran, when, and what it raised, written
by wrappers the drill puts around the routes of a loaded file."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from triosip.script.api import Routes


@dataclass(frozen=True, slots=True)
class Ran:
    """One run of a route: its name, its kind (``request``, ``resume``...) and when."""

    name: str
    kind: str
    at: float


@dataclass
class Journal:
    """The routes that ran, in order, and the exceptions that escaped them."""

    ran: list[Ran] = field(default_factory=list)
    raised: list[str] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Ran]:
        return [run for run in self.ran if run.kind == kind]

    def path(self) -> str:
        """The routes that ran, ``main → found``."""
        return " → ".join(run.name for run in self.ran) or "-"


def instrument(routes: Routes, journal: Journal) -> None:
    """Put a journaling wrapper around every route of `routes`, in the registry and in
    its module's globals, so that a route that names another (``resume=found``) hands the
    proxy the wrapper."""
    request: Any = routes.request_route
    assert request is not None  # load_routes() checked
    namespace: dict[str, Any] = request.__globals__
    name = request.__name__
    wrapped = _journaled(request, "request", journal)
    routes.request_route = wrapped
    if namespace.get(name) is request:
        namespace[name] = wrapped
    for name, route in list(routes.named.items()):
        kind = routes.kinds.get(name, "route")
        wrapper = _journaled(route, kind, journal)
        routes.named[name] = wrapper
        if namespace.get(name) is route:
            namespace[name] = wrapper


def _journaled(
    route: Callable[..., Awaitable[Any]], kind: str, journal: Journal
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(route)
    async def run(*args: Any) -> Any:
        journal.ran.append(Ran(route.__name__, kind, trio.current_time()))
        try:
            return await route(*args)
        except Exception as exc:
            journal.raised.append(f"{route.__name__} raised {type(exc).__name__}: {exc}")
            raise

    return run
