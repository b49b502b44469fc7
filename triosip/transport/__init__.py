"""SIP over UDP and TCP, IPv4 and IPv6 (RFC 3261 §18; RFC 3581 rport; RFC 5626 keep-alives).

`TransportLayer.serve` owns the listeners and connections; messages come up parsed
(`Inbound`) through a synchronous callback, and go down through `TransportLayer.send` or
`TransportLayer.send_nowait`. `response_destination` says where a response goes.
`triosip.transport.base` holds what the layers above name without the sockets (the
transaction layer imports only it).
"""

from ._address import DEFAULT_PORTS as DEFAULT_PORTS
from ._address import Address as Address
from ._address import ListenSpec as ListenSpec
from ._address import parse_listen_spec as parse_listen_spec
from ._address import response_destination as response_destination
from ._connection import TcpConnection as TcpConnection
from ._errors import TransportError as TransportError
from ._layer import TransportLayer as TransportLayer
from ._limits import TransportLimits as TransportLimits
from ._names import LocalNames as LocalNames
from ._names import parse_host_port as parse_host_port
from ._statistics import TransportStatistics as TransportStatistics
from .base import Inbound as Inbound

__all__ = [
    "DEFAULT_PORTS",
    "Address",
    "Inbound",
    "ListenSpec",
    "LocalNames",
    "TcpConnection",
    "TransportError",
    "TransportLayer",
    "TransportLimits",
    "TransportStatistics",
    "parse_host_port",
    "parse_listen_spec",
    "response_destination",
]
