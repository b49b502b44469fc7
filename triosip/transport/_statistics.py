"""The transport's counters and the frozen snapshot ``TransportLayer.statistics()`` returns."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportStatistics:
    """A snapshot of the transport layer's counters (``mi/`` reads these).

    Attributes:
        udp_datagrams_received: datagrams read, keep-alives and bad ones included.
        udp_datagrams_sent: datagrams the kernel took.
        udp_bytes_received: bytes of those datagrams.
        udp_bytes_sent: bytes of those datagrams.
        udp_send_would_block: `TransportLayer.send_nowait` calls that found the socket's
            send buffer full (the caller then waits in ``send`` or drops).
        tcp_messages_received: SIP messages parsed from TCP streams.
        tcp_messages_sent: ``send`` calls completed over TCP.
        tcp_bytes_received: bytes read from TCP connections.
        tcp_bytes_sent: bytes written to TCP connections.
        keepalives_received: RFC 5626 CRLF keep-alives (UDP datagrams of CRLFs only, and
            double-CRLF pings on TCP).
        parse_errors: messages handed to ``on_parse_error``.
        send_errors: sends that raised `TransportError`.
        tcp_connections_open: TCP connections open now.
        tcp_connections_accepted: inbound TCP connections accepted.
        tcp_connections_connected: outbound TCP connections established.
        tcp_connect_failures: outbound connection attempts that failed or timed out.
        tcp_connections_closed: TCP connections closed, for whatever reason.
        tcp_connections_idle_closed: those closed after ``tcp_idle_timeout`` without traffic.
        tcp_connections_evicted: idle connections closed to make room for a new one
            (``tcp_max_connections``).
        tcp_connections_refused: new connections refused because every one of the
            ``tcp_max_connections`` was busy.
        udp_handed_off: requests read on a shared listener and handed over to the worker
            that owns their transaction (``triosip run --workers N``).
        udp_handed_in: requests handed over to this worker by another.
        udp_handoff_dropped: hand-offs dropped because the owner's queue was full.
    """

    udp_datagrams_received: int = 0
    udp_datagrams_sent: int = 0
    udp_bytes_received: int = 0
    udp_bytes_sent: int = 0
    udp_send_would_block: int = 0
    tcp_messages_received: int = 0
    tcp_messages_sent: int = 0
    tcp_bytes_received: int = 0
    tcp_bytes_sent: int = 0
    keepalives_received: int = 0
    parse_errors: int = 0
    send_errors: int = 0
    tcp_connections_open: int = 0
    tcp_connections_accepted: int = 0
    tcp_connections_connected: int = 0
    tcp_connect_failures: int = 0
    tcp_connections_closed: int = 0
    tcp_connections_idle_closed: int = 0
    tcp_connections_evicted: int = 0
    tcp_connections_refused: int = 0
    udp_handed_off: int = 0
    udp_handed_in: int = 0
    udp_handoff_dropped: int = 0


_NAMES = tuple(f.name for f in fields(TransportStatistics))


class Counters:
    """The live, mutable counters behind `TransportStatistics` (one per layer)."""

    __slots__ = _NAMES

    def __init__(self) -> None:
        for name in _NAMES:
            setattr(self, name, 0)

    udp_datagrams_received: int
    udp_datagrams_sent: int
    udp_bytes_received: int
    udp_bytes_sent: int
    udp_send_would_block: int
    tcp_messages_received: int
    tcp_messages_sent: int
    tcp_bytes_received: int
    tcp_bytes_sent: int
    keepalives_received: int
    parse_errors: int
    send_errors: int
    tcp_connections_open: int
    tcp_connections_accepted: int
    tcp_connections_connected: int
    tcp_connect_failures: int
    tcp_connections_closed: int
    tcp_connections_idle_closed: int
    tcp_connections_evicted: int
    tcp_connections_refused: int
    udp_handed_off: int
    udp_handed_in: int
    udp_handoff_dropped: int

    def snapshot(self) -> TransportStatistics:
        return TransportStatistics(**{name: getattr(self, name) for name in _NAMES})
