"""SIP messages as bytes, and a recorder of what the transport hands up.

The transport tests run a real `TransportLayer` on 127.0.0.1 (and ::1) with port 0, and
talk to it through real trio sockets: the layer's callbacks put what they get into
memory channels, which the tests read under ``fail_after``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from triosip.transport import (
    Address,
    Inbound,
    TransportLayer,
    TransportLimits,
    parse_listen_spec,
)

if TYPE_CHECKING:
    from triosip.sip import ParseError


def request(
    method: str = "OPTIONS",
    *,
    call_id: str = "a84b4c76e66710@pc33.example.com",
    via: str = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport",
    cseq: int = 1,
    body: bytes = b"",
) -> bytes:
    """A valid request, as bytes."""
    head = (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "To: Bob <sip:bob@example.com>\r\n"
        "From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@127.0.0.1:5070>\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def response(
    status: int = 200,
    *,
    call_id: str = "a84b4c76e66710@pc33.example.com",
    via: str = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport",
) -> bytes:
    """A valid response to `request`, as bytes."""
    return (
        f"SIP/2.0 {status} OK\r\n"
        f"Via: {via}\r\n"
        "To: Bob <sip:bob@example.com>;tag=a6c85cf\r\n"
        "From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n"
        "\r\n"
    ).encode()


@dataclass(frozen=True)
class BadMessage:
    """One call of ``on_parse_error``."""

    error: ParseError
    data: bytes
    source: Address
    local: Address


@dataclass
class Recorder:
    """The layer's two callbacks, feeding unbounded memory channels."""

    _messages: tuple[trio.MemorySendChannel[Inbound], trio.MemoryReceiveChannel[Inbound]] = field(
        default_factory=lambda: trio.open_memory_channel[Inbound](math.inf)
    )
    _errors: tuple[trio.MemorySendChannel[BadMessage], trio.MemoryReceiveChannel[BadMessage]] = (
        field(default_factory=lambda: trio.open_memory_channel[BadMessage](math.inf))
    )

    def on_message(self, inbound: Inbound) -> None:
        self._messages[0].send_nowait(inbound)

    def on_parse_error(
        self, error: ParseError, data: bytes, source: Address, local: Address
    ) -> None:
        self._errors[0].send_nowait(BadMessage(error, data, source, local))

    async def next_message(self) -> Inbound:
        return await self._messages[1].receive()

    async def next_error(self) -> BadMessage:
        return await self._errors[1].receive()

    def pending_messages(self) -> int:
        return self._messages[1].statistics().current_buffer_used

    def pending_errors(self) -> int:
        return self._errors[1].statistics().current_buffer_used


async def start_layer(
    nursery: trio.Nursery,
    *specs: str,
    limits: TransportLimits | None = None,
) -> tuple[TransportLayer, Recorder, list[Address]]:
    """Start a layer listening on `specs` in `nursery`; return it, its recorder and the
    bound addresses (in the order of `specs`)."""
    recorder = Recorder()
    layer = TransportLayer(
        [parse_listen_spec(spec) for spec in specs],
        on_message=recorder.on_message,
        on_parse_error=recorder.on_parse_error,
        limits=limits or TransportLimits(),
    )
    bound: list[Address] = await nursery.start(layer.serve)
    return layer, recorder, bound


def peer_address(sock: trio.socket.SocketType, transport: str) -> Address:
    """The address the layer sees for a peer socket."""
    name = sock.getsockname()
    return Address(transport, name[0], name[1])


def ipv6_loopback_works() -> bool:
    """Whether ::1 can be bound here; the IPv6 tests fail, rather than skip, if not."""
    import socket

    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True
