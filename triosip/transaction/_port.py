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
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from triosip.transport.base import Address, TcpConnection, TransportError

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

    def now(self) -> float:
        """The current trio time (``trio.current_time()``, read from the run's clock)."""
        ...


class Timed(Protocol):
    """A transaction whose timers the layer's one timers loop runs, as a record without a
    task: a held server transaction, or a client transaction started with
    ``TransactionLayer.start_client``. The loop keeps a heap of (deadline, seq, record);
    ``_heap_at``/``_heap_seq`` say which entry is the record's live one."""

    _heap_at: float
    _heap_seq: int
    _deadlines: dict[Any, float]  # the armed timers (their inputs) -> deadline

    def _fire_timers(self, now: float) -> None:
        """Fire what is due at ``now``, then ask to be scheduled again if need be."""
        ...

    def _transport_error(self, exc: TransportError) -> None:
        """A send the loop made for the record failed."""
        ...

    def _is_over(self) -> bool:
        """Terminated: a send still queued for it is dropped."""
        ...


class TimedPort(Port, Protocol):
    """What a record run by the layer's timers loop asks of it (see `Timed`)."""

    def schedule(self, timed: Timed) -> None:
        """The deadlines of ``timed`` changed: wake for its earliest."""
        ...

    def send_later(
        self,
        data: bytes,
        destination: Address,
        local: Address | None,
        connection: TcpConnection | None,
        timed: Timed | None,
    ) -> None:
        """Send ``data`` from the layer's own task: a record has none to wait in (a full
        UDP buffer, TCP)."""
        ...
