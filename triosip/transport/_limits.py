"""The transport layer's settings: sizes, bounds, timeouts and the response policy."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Sizes, bounds, timeouts and the response policy of the transport layer.

    Attributes:
        udp_buffer_bytes: SO_RCVBUF and SO_SNDBUF asked of the kernel for each UDP socket;
            a burst larger than the receive buffer is dropped by the kernel.
        max_message_size: the largest message accepted (413 beyond, and over TCP the
            connection is closed after the answer).
        tcp_max_connections: TCP connections open at once, both directions.
        tcp_idle_timeout: seconds a TCP connection may carry no message before it is
            closed (Kamailio's tcp_connection_lifetime).
        tcp_connect_timeout: seconds an outbound TCP connection may take to open.
        reply_to_via: send responses where the request's top Via says (its maddr,
            received and rport values) rather than back to its source (Kamailio's
            ``reply_to_via``; ``triosip run --reply-to-via``). Off by default: anyone can
            write a Via, so this makes the proxy a reflector on the open internet.
            Messages carry it up in `Inbound.reply_to_via`.
    """

    udp_buffer_bytes: int = 4 * 1024 * 1024
    max_message_size: int = 65535
    tcp_max_connections: int = 2048
    tcp_idle_timeout: float = 120.0
    tcp_connect_timeout: float = 10.0
    reply_to_via: bool = False

    def __post_init__(self) -> None:
        for name in (
            "udp_buffer_bytes",
            "max_message_size",
            "tcp_max_connections",
            "tcp_idle_timeout",
            "tcp_connect_timeout",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)!r}")


DEFAULT_LIMITS = TransportLimits()
