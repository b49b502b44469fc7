"""The transport layer's error."""

from __future__ import annotations

from triosip.errors import TriosipError


class TransportError(TriosipError):
    """A listener could not be opened, or a message could not be delivered.

    The message says what failed and why, in one line, e.g. ``cannot listen on
    udp:127.0.0.1:5060: address already in use`` or ``cannot connect to
    tcp:192.0.2.1:5060: timed out after 10 s``. The transaction layer turns a delivery
    failure into RFC 3261 §17.1.4 / §17.2.4's "transport error".

    Attributes:
        refused: the peer refused the connection attempt (a TCP reset, or an ICMP
            "protocol not supported"): RFC 3261 §18.1.1 then has a request that went
            over TCP only because of its size retried over UDP.
    """

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused
