"""The transport's public base: what the layers above name, without its sockets.

The transaction layer imports only this module of ``triosip.transport`` (an import-linter
contract keeps it so): addresses, where a response goes, the message handed up, the error,
and the type of a TCP connection it passes back to ``send``. The UDP and TCP machinery
(``TransportLayer``) stays out of its import graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._address import Address as Address
from ._address import response_destination as response_destination
from ._errors import TransportError as TransportError

if TYPE_CHECKING:
    from triosip.sip import Request, Response

    from ._connection import TcpConnection as TcpConnection

__all__ = ["Address", "Inbound", "TransportError", "response_destination"]


@dataclass(frozen=True, slots=True)
class Inbound:
    """One parsed message, handed up by the transport.

    Attributes:
        message: the request or response.
        source: the peer it came from (transport, IP, port).
        local: the local address it arrived on: the UDP listener, or the TCP connection's
            local address (the listener's, for an accepted connection).
        connection: for TCP, the connection it came on: responses to it, and requests
            back to the peer, reuse it.
        reply_to_via: whether responses to it go where its top Via says rather than to
            its source: ``TransportLimits.reply_to_via``, for `response_destination`.
    """

    message: Request | Response
    source: Address
    local: Address
    connection: TcpConnection | None
    reply_to_via: bool = False
