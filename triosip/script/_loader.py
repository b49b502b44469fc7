"""Loading a routes file, and handing its routes to the proxy."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from triosip.errors import TriosipError
from triosip.script._context import ErrorContext, RequestContext
from triosip.script._references import unresolved_routes
from triosip.script._routes import Routes
from triosip.script._runner import ScriptEnvironment

if TYPE_CHECKING:
    from collections.abc import Mapping

    from triosip.proxy import BadMessage, Proxy, ProxyTransaction, StatelessRequest

# The routes shipped with the package; `routes/default.py` in the source tree is the same
# file, so that `triosip run` works with no argument from a wheel as from a checkout.
DEFAULT_ROUTES = Path(__file__).with_name("default_routes.py")

_counter = itertools.count()


class RoutesLoadError(TriosipError):
    """A routes file could not be loaded; the message says what to fix, in one line."""


def load_routes(path: str | Path | None, params: Mapping[str, str]) -> Routes:
    """Import a routes file and return its ``routes``.

    Each load imports the file afresh under its own module name, so that a reload gets
    the new code while live transactions keep the routes they started with.

    Args:
        path: the routes file; None for the default routes.
        params: the script parameters (``--define``), given to every route as ``.params``.

    Raises:
        RoutesLoadError: the file is missing, does not import, defines no request route,
            names a route that is not a registered one, or needs a parameter that
            `params` lacks (``Routes(requires=...)``).
    """
    file = Path(path) if path is not None else DEFAULT_ROUTES
    if not file.is_file():
        raise RoutesLoadError(f"routes file {file} not found")
    name = f"triosip_routes_{file.stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise RoutesLoadError(f"routes file {file} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        # Compiled from the source every time, not through the bytecode cache: the cache
        # is keyed by whole-second mtime and size, so an edit made within the second of
        # the last load (a quick fix, then a reload) would run the old code.
        source = file.read_bytes()
        code = compile(source, spec.origin or str(file), "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except KeyboardInterrupt:
        raise  # a real Ctrl-C (trio delivers SIGINT so): the operator stops the proxy
    except BaseException as exc:
        # Whatever the file raises at import, sys.exit() and GeneratorExit included, it is
        # the file that failed, never the proxy: a reload must not end it. (The import is
        # synchronous, so no trio.Cancelled can come from it.)
        del sys.modules[name]
        # The frames name the file as the spec does (made absolute), not as it was given.
        origin = spec.origin
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == origin]
        line = (
            exc.lineno if isinstance(exc, SyntaxError) else (frames[-1].lineno if frames else "?")
        )
        raise RoutesLoadError(
            f"routes file {file} line {line}: {type(exc).__name__}: {exc}"
        ) from None
    routes = getattr(module, "routes", None)
    if not isinstance(routes, Routes):
        raise RoutesLoadError(f"routes file {file} defines no `routes = Routes()`")
    if routes.request_route is None:
        raise RoutesLoadError(f"routes file {file} registers no @routes.request route")
    problems = unresolved_routes(source, module.__dict__, routes)
    if problems:
        raise RoutesLoadError(f"routes file {file} {problems[0]}")
    missing = [name for name in routes.requires if name not in params]
    if missing:
        needs = ", ".join(f"--define {name}=VALUE" for name in missing)
        raise RoutesLoadError(
            f"routes file {file} needs {needs} (it declares requires={routes.requires!r})"
        )
    routes.params = dict(params)
    return routes


class ScriptHandlers:
    """The proxy's `RouteHandlers`, backed by a loaded routes file.

    Args:
        routes: the loaded routes.
        environment: the database, REST client and launch nursery the routes reach; by
            default none of them (``req.db`` then raises `ScriptError`).
    """

    def __init__(self, routes: Routes, environment: ScriptEnvironment | None = None) -> None:
        self.routes = routes
        self.environment = environment or ScriptEnvironment()

    async def request(self, tx: ProxyTransaction) -> None:
        """The request route, for a request with a transaction."""
        route = self.routes.request_route
        assert route is not None  # load_routes() checked
        source = tx.server.inbound.source
        # The route's ops (async_) run in the route's nursery, inside the transaction's
        # cancel scope: the route's run ends when they and their resume routes have ended.
        context = RequestContext(
            tx,
            self.routes.params,
            self.environment,
            tx.route_ops,
            transaction=tx,
            source=source,
        )
        await route(context)

    async def stateless(self, request: StatelessRequest) -> None:
        """The request route, for a request with no transaction (the ACK of a 2xx)."""
        route = self.routes.request_route
        assert route is not None  # load_routes() checked
        # No transaction to run ops in (async_ refuses); plain awaits still work. It is a
        # third of a call's requests: skip the nursery.
        context = RequestContext(
            request,
            self.routes.params,
            self.environment,
            None,
            transaction=None,
            source=request.inbound.source,
        )
        await route(context)

    async def parse_error(self, proxy: Proxy, bad: BadMessage) -> bool:
        route = self.routes.error_route
        if route is None:
            return False
        context = ErrorContext(proxy, bad, self.routes.params)
        await route(context)
        return context.replied
