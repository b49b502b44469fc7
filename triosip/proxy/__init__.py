"""The transaction-stateful proxy core (RFC 3261 §16)."""

from triosip.proxy._core import BadMessage as BadMessage
from triosip.proxy._core import Proxy as Proxy
from triosip.proxy._core import ProxyInbox as ProxyInbox
from triosip.proxy._core import RouteHandlers as RouteHandlers
from triosip.proxy._core import StatelessRequest as StatelessRequest
from triosip.proxy._forward import NextHop as NextHop
from triosip.proxy._forward import RoutingError as RoutingError
from triosip.proxy._forward import parse_destination as parse_destination
from triosip.proxy._names import route_name as route_name
from triosip.proxy._names import short_route_name as short_route_name
from triosip.proxy._port import ProxyConfig as ProxyConfig
from triosip.proxy._port import ProxyPort as ProxyPort
from triosip.proxy._statistics import ProxyStatistics as ProxyStatistics
from triosip.proxy._target import RouteTarget as RouteTarget
from triosip.proxy._transaction import Branch as Branch
from triosip.proxy._transaction import ProxyTransaction as ProxyTransaction
from triosip.proxy._transaction import RunningRoute as RunningRoute
from triosip.proxy.inspection import ProxyInspection as ProxyInspection

__all__ = [
    "BadMessage",
    "Branch",
    "NextHop",
    "Proxy",
    "ProxyConfig",
    "ProxyInbox",
    "ProxyInspection",
    "ProxyPort",
    "ProxyStatistics",
    "ProxyTransaction",
    "RouteHandlers",
    "RouteTarget",
    "RoutingError",
    "RunningRoute",
    "StatelessRequest",
    "parse_destination",
    "route_name",
    "short_route_name",
]
