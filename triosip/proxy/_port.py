"""What a proxied transaction needs of its proxy: `ProxyPort`, and the proxy's `ProxyConfig`.

`ProxyTransaction` (``_transaction.py``) is owned by the `Proxy` (``_core.py``), and must
not reach into it: it gets this port, which the proxy satisfies. Keeping the port in a
file of its own keeps the import graph of ``proxy/`` acyclic: the core imports the
transaction, and the transaction imports only this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Container

    from triosip.proxy._forward import NextHop
    from triosip.proxy._statistics import ProxyCounters
    from triosip.sip import URI, Request
    from triosip.transaction import TransactionLayer
    from triosip.transport import Address, TransportLayer


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """What tm's module parameters set in OpenSIPS and Kamailio."""

    fr_timeout: float = 30.0
    fr_inv_timeout: float = 120.0


class RequestRoute(Protocol):
    """The one entry point of the routes a transaction calls: the request route."""

    @property
    def request(self) -> Callable[[Any], Awaitable[None]]:
        """The request route, run with the transaction."""
        ...


class ProxyPort(Protocol):
    """The proxy, as a transaction (and a route, through it) sees it.

    Attributes:
        config: the fr timers every transaction starts with.
        counters: the proxy's counters, which a transaction bumps.
        own_addresses: the (host, port) pairs that are this proxy (its listeners, their
            advertised names, its aliases), for Route and loop checks.
    """

    config: ProxyConfig
    counters: ProxyCounters
    own_addresses: Container[tuple[str, int]]

    @property
    def handlers(self) -> RequestRoute:
        """The routes running now (a reload swaps them for new transactions)."""
        ...

    @property
    def transactions(self) -> TransactionLayer:
        """The transaction layer the branches run on."""
        ...

    @property
    def transport(self) -> TransportLayer:
        """The transport: its listeners and their local addresses."""
        ...

    def is_myself(self, uri: URI) -> bool:
        """Whether `uri` names one of our listeners."""
        ...

    def has_looped(self, request: Request) -> bool:
        """Whether `request` came back with a Via of ours (RFC 3261 §16.3 step 4)."""
        ...

    def note_answered(self) -> None:
        """A transaction sent its final response."""
        ...

    async def resolve(self, hop: NextHop) -> Address:
        """The transport address of a next hop (DNS for a name)."""
        ...

    async def run_route(self, tx: Any, route: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run a route, isolating the proxy from its exceptions."""
        ...
