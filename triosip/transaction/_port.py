"""The port a transaction gets from its layer: what it may ask of it, and nothing more.

A transaction never reaches into ``TransactionLayer``: it gets a port, and the port offers
the few operations it needs. ``Port`` here is what both kinds share (the timer values, the
transport to send on, counting an event); ``ClientPort`` and ``ServerPort`` add what each
kind needs, and are declared beside the transaction that uses them (``_client.py``,
``_server.py``), so that the runtime *and* the typing import graph of this package stay
acyclic: ``_layer`` imports ``_client`` and ``_server``, which import only this module.

Why a port rather than h2's events (stream methods returning events for the connection to
act on): h2's streams are driven by one connection object in one place, while a transaction
here runs in its own task (its timers loop, the route awaiting ``respond``) as well as in
the transport's synchronous ``receive``; returning events would need a dispatcher at every
one of those call sites. A port keeps each call where it is, and typed.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from triosip.transport.base import Address, TcpConnection

    from ._timers import TimerConfig


class Counted(enum.Enum):
    """Events a transaction counts in its layer's statistics (``TransactionStatistics``).

    Each value is the name of the statistic it adds one to.
    """

    RETRANSMISSION_SENT = "retransmissions_sent"
    RETRANSMISSION_ABSORBED = "retransmissions_absorbed"
    TIMEOUT = "timeouts"
    HANDLER_ERROR = "handler_errors"
    DROPPED = "dropped"


class Transport(Protocol):
    """What the transaction layer needs of ``triosip.transport.TransportLayer``."""

    def send_nowait(
        self, data: bytes, destination: Address, *, local: Address | None = None
    ) -> bool:
        """Send a UDP datagram now if the socket takes it; False if the caller must wait."""
        ...

    async def send(
        self,
        data: bytes,
        destination: Address,
        *,
        connection: TcpConnection | None = None,
        local: Address | None = None,
    ) -> None:
        """Send a message; raises ``TransportError``."""
        ...


class Port(Protocol):
    """What every transaction may ask of its layer."""

    @property
    def timers(self) -> TimerConfig:
        """T1, T2, T4 and the timers derived from them."""
        ...

    @property
    def transport(self) -> Transport:
        """Where messages are sent (``send_nowait`` for UDP now, ``send`` otherwise)."""
        ...

    def count(self, event: Counted) -> None:
        """Add one to the layer's statistic for ``event``."""
        ...
