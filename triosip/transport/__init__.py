"""SIP over UDP and TCP, IPv4 and IPv6 (RFC 3261 §18; RFC 3581 rport; RFC 5626 keep-alives).

`TransportLayer.serve` owns the listeners and connections; messages come up parsed
(`Inbound`) through a synchronous callback, and go down through `TransportLayer.send` or
`TransportLayer.send_nowait`. `response_destination` says where a response goes.
"""

from ._address import DEFAULT_PORTS as DEFAULT_PORTS
from ._address import Address as Address
from ._address import ListenSpec as ListenSpec
from ._address import parse_listen_spec as parse_listen_spec
from ._address import response_destination as response_destination
from ._errors import TransportError as TransportError
from ._layer import Inbound as Inbound
from ._layer import TransportLayer as TransportLayer
from ._layer import TransportLimits as TransportLimits
from ._statistics import TransportStatistics as TransportStatistics
from ._tcp import TcpConnection as TcpConnection

__all__ = [
    "DEFAULT_PORTS",
    "Address",
    "Inbound",
    "ListenSpec",
    "TcpConnection",
    "TransportError",
    "TransportLayer",
    "TransportLimits",
    "TransportStatistics",
    "parse_listen_spec",
    "response_destination",
]
