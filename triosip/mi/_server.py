"""The management interface: JSON over HTTP on loopback (docs/architecture.md).

Endpoints (``GET`` unless said):

- ``/tasks``: the live task tree of every transaction, oldest first
  (``?call_id=&method=&older_than=`` filter; ``?limit=N`` shows the N oldest of those,
  the summary says how many there are in all; ``?summary=1`` gives only the counts by
  method, state and op kind);
- ``/transactions``: the live transactions and their branches, without tasks (same
  parameters);
- ``/stats``: every layer's counters as JSON; ``/metrics``: the same in Prometheus' format;
- ``/version``: version, uptime, listeners;
- ``POST /reload``: load the routes file again and swap it in for new transactions.

Clients on loopback are trusted; any other needs ``Authorization: Bearer <token>`` (401
otherwise), and with no token configured, none gets in; a connection counts against the
connection limit only once a request head passed that rule (`serve_http`). Reads are
built a slice of transactions at a time, each entry of one instant (``_snapshot.py``), so
that a large one never stalls SIP; the only write is the reload (`MISources.reload`, from
the application), which replaces the proxy's handlers in one assignment: a transaction
that started keeps the routes it started with (its failure and resume routes are
closures over them), the next one gets the new routes, and a file that fails to load
leaves the old routes running.
"""

from __future__ import annotations

import datetime
import hmac
import ipaddress
import logging
import platform
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from triosip import __version__
from triosip.errors import TriosipError
from triosip.mi._http import HttpLimits, HttpRequest, HttpResponse, serve_http
from triosip.mi._process import process_statistics
from triosip.mi._snapshot import tasks_document, transactions_document
from triosip.mi._stats import PROMETHEUS_CONTENT_TYPE, prometheus_text, statistics_document
from triosip.mi._tasks import QueryError, TaskQuery
from triosip.ops import op_accounting
from triosip.script import RoutesLoadError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from triosip.proxy import ProxyInspection, ProxyStatistics
    from triosip.script import ScriptEnvironment
    from triosip.transaction import TransactionStatistics
    from triosip.transport import Address, TransportStatistics

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8888

_BEARER = "bearer "


class MIError(TriosipError):
    """The management interface could not start (its address is in use, say); the message
    says what to fix, in one line."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MIConfig:
    """How the management interface listens and whom it lets in.

    Attributes:
        host: the address to listen on; loopback by default.
        port: the TCP port; 0 picks a free one.
        token: the bearer token clients not on loopback must show; without one, they
            all get 401.
        trust_loopback: whether clients on loopback may come without the token (False:
            everyone shows it, for a host shared with other users).
        limits: the bounds of each HTTP connection, and how many may run at once.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    trust_loopback: bool = True
    limits: HttpLimits = field(default_factory=HttpLimits)


@dataclass(frozen=True, slots=True, kw_only=True)
class MISources:
    """What the MI shows and acts on, handed to it by the application
    (`triosip.app.serve_triosip`): the MI reaches nothing else of the proxy.

    Attributes:
        inspect: a read-only view of what runs now, which ``/tasks`` and
            ``/transactions`` sample.
        listeners: the SIP listeners bound so far (none before they are).
        proxy_statistics: the proxy's counters.
        transaction_statistics: the transaction layer's counters.
        transport_statistics: the transport layer's counters.
        environment: the routes' database and REST client, for their counters, and the
            work they launched, for the task tree.
        routes_file: the routes file ``/version`` shows; None for routes built in code.
        reload: loads the routes file again and swaps it in for new transactions
            (raising `RoutesLoadError` when it does not load); None refuses reloads.
    """

    inspect: Callable[[], ProxyInspection]
    listeners: Callable[[], Sequence[Address]]
    proxy_statistics: Callable[[], ProxyStatistics]
    transaction_statistics: Callable[[], TransactionStatistics]
    transport_statistics: Callable[[], TransportStatistics]
    environment: ScriptEnvironment | None = None
    routes_file: str | Path | None = None
    reload: Callable[[], Awaitable[None]] | None = None


def is_authorized(
    client: str, authorization: str | None, *, token: str | None, trust_loopback: bool = True
) -> bool:
    """Whether a client may use the MI.

    Args:
        client: the client's IP address.
        authorization: its ``Authorization`` header, if any.
        token: the configured token, if any.
        trust_loopback: whether a loopback client needs no token.

    Returns:
        True for a loopback client (when trusted), or for one whose header is
        ``Bearer <token>``; False otherwise, and always False when no token is set for a
        client that needs one.
    """
    if trust_loopback and _is_loopback(client):
        return True
    if token is None or authorization is None:
        return False
    if authorization[: len(_BEARER)].lower() != _BEARER:
        return False
    # Compared in constant time, so that the answer's timing tells nothing of the token.
    given = authorization[len(_BEARER) :].strip().encode()
    return hmac.compare_digest(given, token.encode())


def parse_mi_address(spec: str) -> tuple[str, int] | None:
    """The ``--mi`` option: ``HOST:PORT``, ``[IPv6]:PORT``, or ``off``.

    Returns:
        ``(host, port)``, the host without brackets; None for ``off``.

    Raises:
        ValueError: not of that form, or a port out of range.
    """
    if spec.strip().lower() == "off":
        return None
    host, sep, port_text = spec.rpartition(":")
    if not sep or not host:
        raise ValueError(f"write HOST:PORT (e.g. {DEFAULT_HOST}:{DEFAULT_PORT}) or off")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("write an IPv6 host in brackets: [::1]:8888")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not a number from 0 to 65535")
    return host, int(port_text)


def mi_url(host: str, port: int) -> str:
    """``http://127.0.0.1:8888``, or ``http://[::1]:8888`` for IPv6."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve_mi(
    sources: MISources,
    config: MIConfig | None = None,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the management interface over `sources` until cancelled.

    Owns its listeners, an accept task per listener and a task per connection (named "MI
    <client address>"), all in its own nursery; cancelling it closes them all.

    Args:
        sources: what to show and how to reload.
        config: where to listen, the token; the defaults (127.0.0.1:8888, no token)
            when None.
        task_status: ``started((host, port))`` with the address bound (the real port
            when 0 was asked).

    Raises:
        MIError: the address cannot be listened on (in use, not ours).
    """
    config = config or MIConfig()
    try:
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    except OSError as exc:
        where = mi_url(config.host, config.port).removeprefix("http://")
        reason = exc.strerror or str(exc)
        raise MIError(
            f"--mi {where}: the management interface cannot listen there: {reason} "
            "(give another --mi HOST:PORT, or --mi off)"
        ) from None
    sockname = listeners[0].socket.getsockname()
    bound = (str(sockname[0]), int(sockname[1]))
    mi = ManagementInterface(sources, config, listening_on=bound)
    if not _is_loopback(config.host) and config.token is None:
        logger.warning(
            "management interface on %s with no token: every client not on loopback gets 401",
            config.host,
        )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, listeners, mi, config, nursery, name="MI server")
        logger.info("management interface on %s", mi_url(*bound))
        task_status.started(bound)


async def _serve(
    listeners: list[trio.SocketListener],
    mi: ManagementInterface,
    config: MIConfig,
    nursery: trio.Nursery,
) -> None:
    await serve_http(listeners, mi.handle, limits=config.limits, nursery=nursery, gate=mi.refusal)


_Endpoint = Callable[["ManagementInterface", HttpRequest], Awaitable[HttpResponse]]


def token_refusal(config: MIConfig, request: HttpRequest) -> HttpResponse | None:
    """The token rule (`is_authorized`) applied to a request's head, for every server of
    the management interface (a proxy's, a supervisor's).

    Returns:
        None if the client may come in, else the 401 to answer (the refusal logged).
    """
    if is_authorized(
        request.client,
        request.headers.get("authorization"),
        token=config.token,
        trust_loopback=config.trust_loopback,
    ):
        return None
    logger.info("MI: %s %s from %s refused: no token", request.method, request.path, request.client)
    return HttpResponse.error(
        401,
        "this client needs the MI token: Authorization: Bearer <token>",
        headers=(("www-authenticate", 'Bearer realm="triosip"'),),
    )


class ManagementInterface:
    """The MI's endpoints over one proxy; `serve_mi` serves `handle` over HTTP.

    Args:
        sources: what to show and how to reload.
        config: the token.
        listening_on: where the MI listens, for ``/version``.
    """

    def __init__(
        self, sources: MISources, config: MIConfig, *, listening_on: tuple[str, int] | None = None
    ) -> None:
        self.sources = sources
        self.config = config
        self.listening_on = listening_on
        self.started_at = trio.current_time()
        self.started_wall = time.time()
        self.reloads = 0
        self._reload_lock = trio.Lock()

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request: the endpoint's JSON, or a JSON error.

        Returns:
            401 without the token off loopback, 404 for an unknown path, 405 for a wrong
            method, 400 for bad parameters, else the endpoint's response.
        """
        refusal = self.refusal(request)
        if refusal is not None:
            return refusal
        endpoint = _ENDPOINTS.get(request.path.rstrip("/") or "/")
        if endpoint is None:
            return HttpResponse.error(
                404, f"no endpoint {request.path}; try one of {', '.join(_PATHS)}"
            )
        method, function = endpoint
        if request.method != method:
            return HttpResponse.error(
                405,
                f"{request.path} takes {method}, not {request.method}",
                headers=(("allow", method),),
            )
        try:
            return await function(self, request)
        except QueryError as exc:
            return HttpResponse.error(400, str(exc))

    def refusal(self, request: HttpRequest) -> HttpResponse | None:
        """The token rule (`is_authorized`), applied to a request's head: the HTTP server
        admits a connection only once a head passes it (`token_refusal`)."""
        return token_refusal(self.config, request)

    # -- endpoints ------------------------------------------------------------------------

    async def index(self, request: HttpRequest) -> HttpResponse:
        """``GET /``: the endpoints."""
        _no_parameters(request)
        return HttpResponse.json(200, {"endpoints": list(_PATHS)})

    async def tasks(self, request: HttpRequest) -> HttpResponse:
        """``GET /tasks``: the task tree (`task_tree`), filtered and limited by the query,
        built a slice at a time so that SIP keeps running meanwhile."""
        query = TaskQuery.from_params(request.query)
        body = await tasks_document(self.sources.inspect(), query, self._launched_tasks)
        return HttpResponse(status=200, body=body)

    async def transactions(self, request: HttpRequest) -> HttpResponse:
        """``GET /transactions``: the transaction table (`transaction_table`), built the
        same way."""
        query = TaskQuery.from_params(request.query)
        body = await transactions_document(self.sources.inspect(), query)
        return HttpResponse(status=200, body=body)

    async def stats(self, request: HttpRequest) -> HttpResponse:
        """``GET /stats``: `statistics` as JSON."""
        _no_parameters(request)
        return HttpResponse.json(200, self.statistics())

    async def metrics(self, request: HttpRequest) -> HttpResponse:
        """``GET /metrics``: `statistics` in Prometheus' text format."""
        _no_parameters(request)
        text = prometheus_text(self.statistics())
        return HttpResponse(status=200, body=text.encode(), content_type=PROMETHEUS_CONTENT_TYPE)

    async def version(self, request: HttpRequest) -> HttpResponse:
        """``GET /version``: version, uptime, listeners, routes file and reloads."""
        _no_parameters(request)
        routes = self.sources.routes_file
        return HttpResponse.json(
            200,
            {
                "version": __version__,
                "uptime": round(trio.current_time() - self.started_at, 3),
                "started": datetime.datetime.fromtimestamp(
                    self.started_wall, datetime.UTC
                ).isoformat(timespec="seconds"),
                "listeners": [str(address) for address in self.sources.listeners()],
                "mi": mi_url(*self.listening_on) if self.listening_on else None,
                "routes": str(routes) if routes is not None else None,
                "reloads": self.reloads,
                "python": platform.python_version(),
                "trio": trio.__version__,
            },
        )

    async def reload(self, request: HttpRequest) -> HttpResponse:
        """``POST /reload``: load the routes file again and swap it in (module doc); 422
        with the reason when it does not load, 409 when there is no file to load."""
        _no_parameters(request)
        routes_file = self.sources.routes_file
        reload = self.sources.reload
        if reload is None:
            return HttpResponse.error(409, "this proxy was not started from a routes file")
        async with self._reload_lock:
            try:
                await reload()
            except RoutesLoadError as exc:
                logger.warning("reload failed, the old routes keep running: %s", exc)
                return HttpResponse.json(422, {"reloaded": False, "error": str(exc), "status": 422})
            self.reloads += 1
        logger.info("routes reloaded from %s (reload %d)", routes_file, self.reloads)
        return HttpResponse.json(
            200, {"reloaded": True, "routes": str(routes_file), "reloads": self.reloads}
        )

    def _launched_tasks(self) -> list[trio.lowlevel.Task]:
        # Launched work runs in the script environment's nursery, beyond any transaction.
        environment = self.sources.environment
        return environment.launched_tasks() if environment is not None else []

    def statistics(self) -> dict[str, Any]:
        """The ``GET /stats`` document of the proxy now."""
        sources = self.sources
        accounting = op_accounting()
        environment = sources.environment
        db = environment.db if environment is not None else None
        rest = environment.rest if environment is not None else None
        return statistics_document(
            version=__version__,
            uptime=trio.current_time() - self.started_at,
            proxy=sources.proxy_statistics(),
            transactions=sources.transaction_statistics(),
            transport=sources.transport_statistics(),
            ops=accounting.kinds,
            ops_running=Counter(op.kind for op in accounting.running.values()),
            db=db.statistics() if db is not None else None,
            rest=rest.statistics() if rest is not None else None,
            process=process_statistics(fallback_start=self.started_wall),
        )


_ENDPOINTS: dict[str, tuple[str, _Endpoint]] = {
    "/": ("GET", ManagementInterface.index),
    "/tasks": ("GET", ManagementInterface.tasks),
    "/transactions": ("GET", ManagementInterface.transactions),
    "/stats": ("GET", ManagementInterface.stats),
    "/metrics": ("GET", ManagementInterface.metrics),
    "/version": ("GET", ManagementInterface.version),
    "/reload": ("POST", ManagementInterface.reload),
}
_PATHS = tuple(path for path in _ENDPOINTS if path != "/")


def _no_parameters(request: HttpRequest) -> None:
    if request.query:
        raise QueryError(f"{request.path} takes no parameters")


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host == "localhost"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 from a dual-stack socket
    return address.is_loopback
