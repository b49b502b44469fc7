"""What a proxied transaction needs of its proxy: `ProxyPort`, the proxy's `ProxyConfig`,
and the stamps of ours its requests carry (`OwnStamps`).

`ProxyTransaction` (``_transaction.py``) is owned by the `Proxy` (``_core.py``), and must
not reach into it: it gets this port, which the proxy satisfies. Keeping the port in a
file of its own keeps the import graph of ``proxy/`` acyclic: the core imports the
transaction, and the transaction imports only this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from triosip.proxy._forward import RoutingError, record_route_value, via_value
from triosip.transport import TransportError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Container

    from triosip.proxy._forward import NextHop
    from triosip.proxy._statistics import ProxyCounters
    from triosip.sip import URI, Request
    from triosip.transaction import TransactionLayer
    from triosip.transport import Address, Inbound, TransportLayer


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """What tm's module parameters set in OpenSIPS and Kamailio."""

    fr_timeout: float = 30.0
    fr_inv_timeout: float = 120.0


class Stamps(NamedTuple):
    """What a request forwarded to one destination carries of ours (`OwnStamps`)."""

    # Our Via up to its branch parameter (`via_value` with the branch last).
    via_before_branch: str
    record_route: tuple[str, ...]
    # Whether a TCP listener exists, for the RFC 3261 §18.1.1 size rule.
    tcp_listener: bool


class OwnStamps:
    """Our Via and Record-Route for each destination, memoized: they depend only on the
    listeners (fixed once the transport serves), the destination's transport and host,
    and for Record-Route where the request came in, yet took six calls into the
    transport per forwarded request. Bounded: cleared when full (destinations and
    sources come from the wire)."""

    SIZE = 1024

    def __init__(self, transport: TransportLayer) -> None:
        self._transport = transport
        self._memo: dict[tuple[str, str, Address | None, str], Stamps] = {}

    def toward(self, address: Address, came: Inbound | None) -> Stamps:
        """The stamps of a request sent to `address`; `came`: where it came in, when it
        is to be record-routed (else None).

        Raises:
            RoutingError: no listener of the destination's transport.
        """
        key = (
            address.transport,
            address.host,
            None if came is None else came.local,
            "" if came is None else came.source.host,
        )
        stamps = self._memo.get(key)
        if stamps is None:
            if len(self._memo) >= self.SIZE:
                self._memo.clear()
            stamps = self._memo[key] = self._stamps(address, came)
        return stamps

    def _stamps(self, address: Address, came: Inbound | None) -> Stamps:
        transport = self._transport
        try:
            local = transport.local_address(address.transport, family_of=address.host)
        except TransportError as exc:
            raise RoutingError(f"cannot send to {address}: {exc}") from None
        named = transport.advertised(local, address.host)
        record_route: tuple[str, ...] = ()
        if came is not None:
            came_to = transport.advertised(came.local, came.source.host)
            record_route = (
                (record_route_value(named),)
                if named == came_to
                else (record_route_value(named), record_route_value(came_to))
            )
        # --workers: this worker's own port, so that the responses come back to it.
        sent_by = transport.sent_by(local, named)
        return Stamps(
            via_before_branch=via_value(sent_by, ""),
            record_route=record_route,
            tcp_listener=any(a.transport == "tcp" for a in transport.listeners),
        )


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
        stamps: our Via and Record-Route per destination.
    """

    config: ProxyConfig
    counters: ProxyCounters
    own_addresses: Container[tuple[str, int]]
    stamps: OwnStamps

    @property
    def now(self) -> Callable[[], float]:
        """The time on trio's clock (`trio.current_time`), read in fewer calls."""
        ...

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

    def route_failed(self, tx: Any, route: Callable[..., Awaitable[Any]], exc: Exception) -> None:
        """A route raised `exc`: log it (throttled), isolating the proxy from it."""
        ...
