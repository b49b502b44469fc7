"""A real in-memory transport and SIP messages for the transaction tests.

``FakeTransport`` implements the part of ``TransportLayer`` the transaction layer uses
(``send``, ``send_nowait``, ``local_address``) and records what was sent, with the trio time,
so that timer tests can assert the schedule under ``autojump_clock``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from triosip.sip import Request, Response, build_response, parse_message
from triosip.transport import Address, Inbound, TcpConnection, TransportError

PEER = Address("udp", "192.0.2.10", 5070)
PEER_TCP = Address("tcp", "192.0.2.10", 5070)
LOCAL = Address("udp", "192.0.2.1", 5060)
LOCAL_TCP = Address("tcp", "192.0.2.1", 5060)
NEXT_HOP = Address("udp", "192.0.2.20", 5060)
NEXT_HOP_TCP = Address("tcp", "192.0.2.20", 5060)


@dataclass(frozen=True)
class Sent:
    at: float
    data: bytes
    destination: Address
    local: Address | None
    nowait: bool

    @property
    def message(self) -> Request | Response:
        return parse_message(self.data)

    @property
    def first_line(self) -> str:
        return self.data.split(b"\r\n", 1)[0].decode()


@dataclass
class FakeTransport:
    """Records every send; ``fail`` makes ``send`` raise, ``nowait_ok`` False makes UDP wait."""

    sent: list[Sent] = field(default_factory=list)
    fail: bool = False
    nowait_ok: bool = True

    def local_address(self, transport: str, family_of: str | None = None) -> Address:
        return LOCAL if transport == "udp" else LOCAL_TCP

    def send_nowait(
        self, data: bytes, destination: Address, *, local: Address | None = None
    ) -> bool:
        if destination.transport != "udp" or not self.nowait_ok:
            return False
        self.sent.append(Sent(trio.current_time(), data, destination, local, nowait=True))
        return True

    async def send(
        self,
        data: bytes,
        destination: Address,
        *,
        connection: TcpConnection | None = None,
        local: Address | None = None,
    ) -> None:
        await trio.lowlevel.checkpoint()
        if self.fail:
            raise TransportError(f"cannot connect to {destination}: refused")
        self.sent.append(Sent(trio.current_time(), data, destination, local, nowait=False))

    def lines(self) -> list[str]:
        return [sent.first_line for sent in self.sent]

    def times(self, first_line: str) -> list[float]:
        return [sent.at for sent in self.sent if sent.first_line == first_line]


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bK776asdhds",
    transport: str = "UDP",
    sent_by: str = "192.0.2.10:5070",
    cseq: int = 314159,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    from_tag: str = "1928301774",
    call_id: str = "a84b4c76e66710@pc33.atlanta.example.com",
    uri: str = "sip:bob@biloxi.example.com",
    extra: str = "",
) -> Request:
    """A request as a UAC sends it (RFC 3261 §24.2 F1, trimmed)."""
    branch_param = "" if branch is None else f";branch={branch}"
    to_tag_param = "" if to_tag is None else f";tag={to_tag}"
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {sent_by}{branch_param}\r\n"
        "Max-Forwards: 70\r\n"
        f"To: Bob <sip:bob@biloxi.example.com>{to_tag_param}\r\n"
        f"From: Alice <sip:alice@atlanta.example.com>;tag={from_tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n"
        "\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def ack_for(invite: Request, response: Response, *, branch: str | None = None) -> Request:
    """The ACK a UAC sends for ``response``: same branch for a non-2xx (§17.1.1.3)."""
    via = invite.top_via
    return request(
        "ACK",
        branch=via.branch if branch is None else branch,
        transport=via.transport,
        sent_by=f"{via.host}:{via.port}",
        cseq=invite.cseq.number,
        to_tag=response.to.tag,
        from_tag=invite.from_.tag or "",
        call_id=invite.call_id,
        uri=invite.uri_raw,
    )


def cancel_for(invite: Request) -> Request:
    """The CANCEL of an INVITE: same branch, same CSeq number (RFC 3261 §9.1)."""
    via = invite.top_via
    return request(
        "CANCEL",
        branch=via.branch,
        transport=via.transport,
        sent_by=f"{via.host}:{via.port}",
        cseq=invite.cseq.number,
        from_tag=invite.from_.tag or "",
        call_id=invite.call_id,
        uri=invite.uri_raw,
    )


def proxied(method: str = "INVITE", *, branch: str, transport: str = "UDP") -> Request:
    """A request as the proxy forwards it: its own Via on top (a client transaction's)."""
    return request(
        method,
        branch=branch,
        transport=transport,
        sent_by="192.0.2.1:5060",
        extra="Route: <sip:p2.example.com;lr>\r\nRoute: <sip:p3.example.com;lr>\r\n",
    )


def inbound(message: Request | Response, source: Address = PEER) -> Inbound:
    local = LOCAL if source.transport == "udp" else LOCAL_TCP
    return Inbound(message=message, source=source, local=local, connection=None)


def response(req: Request, status: int, to_tag: str | None = "a6c85cf") -> Response:
    return build_response(req, status, to_tag=to_tag)
