"""The ACK and CANCEL builders: messages, not bytes, with the lines a peer matches on."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.messages import request, response
from triosip.sip import Request, Response, build_ack, build_cancel, parse_message

ROUTES = (
    "Route: <sip:p1.example.com;lr>,<sip:p2.example.com;lr>",
    "Route: <sip:p3.example.com;lr>",
)


def parsed_request(*extra: str | bytes, **kwargs: Any) -> Request:
    message = parse_message(request("INVITE", "sip:bob@biloxi.example.com", *extra, **kwargs))
    assert isinstance(message, Request)
    return message


def parsed_response(status_line: str) -> Response:
    message = parse_message(response(status_line))
    assert isinstance(message, Response)
    return message


def test_ack_of_a_non_2xx_is_a_request_with_the_lines_of_section_17_1_1_3() -> None:
    invite = parsed_request(*ROUTES)
    ack = build_ack(invite, parsed_response("SIP/2.0 486 Busy Here"))
    assert isinstance(ack, Request)
    # The wire form is what the ICT used to send as bytes, line for line.
    assert bytes(ack) == (
        b"ACK sip:bob@biloxi.example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
        b"Max-Forwards: 70\r\n"
        b"To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
        b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
        b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
        + ROUTES[0].encode()
        + b"\r\n"
        + ROUTES[1].encode()
        + b"\r\nCSeq: 314159 ACK\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    # Its fields read like a parsed message's, without parsing it again.
    assert ack.top_via.branch == invite.top_via.branch
    assert (ack.cseq.number, ack.cseq.method) == (314159, "ACK")
    assert ack.to.tag == "a6c85cf"
    assert [str(route.uri) for route in ack.route] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
        "sip:p3.example.com;lr",
    ]
    assert ack.header_lines("route") == [line.partition(": ")[2] for line in ROUTES]
    reparsed = parse_message(bytes(ack))
    assert isinstance(reparsed, Request)
    assert reparsed.lines == ack.lines


def test_cancel_is_a_request_matching_the_invite() -> None:
    invite = parsed_request(*ROUTES)
    cancel = build_cancel(invite)
    assert isinstance(cancel, Request)
    assert bytes(cancel) == (
        b"CANCEL sip:bob@biloxi.example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
        + ROUTES[0].encode()
        + b"\r\n"
        + ROUTES[1].encode()
        + b"\r\nMax-Forwards: 70\r\n"
        b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
        b"To: Bob <sip:bob@biloxi.example.com>\r\n"
        b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
        b"CSeq: 314159 CANCEL\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    # RFC 3261 §9.1: the top Via only, so the same branch; the CSeq number of the INVITE.
    assert cancel.via == (invite.top_via,)
    assert (cancel.cseq.number, cancel.cseq.method) == (invite.cseq.number, "CANCEL")
    assert cancel.call_id == invite.call_id
    assert cancel.max_forwards == 70
    assert cancel.to.tag is None
    assert cancel.header("route") == invite.header("route")


def test_cancel_takes_the_top_via_of_a_line_holding_several() -> None:
    invite = parsed_request(
        via="SIP/2.0/UDP proxy.example.com;branch=z9hG4bKtop, SIP/2.0/UDP pc33.example.com"
        ";branch=z9hG4bKbelow"
    )
    assert [via.branch for via in build_cancel(invite).via] == ["z9hG4bKtop"]


@pytest.mark.parametrize("builder", ["ack", "cancel"])
def test_non_utf8_header_bytes_are_carried_as_they_came(builder: str) -> None:
    # This used to raise UnicodeEncodeError from build_cancel (it formatted text, then
    # encoded it strictly to parse it again) as soon as the proxy CANCELled a branch of
    # an INVITE whose From held a Latin-1 byte.
    raw = request("INVITE").replace(b"From: Alice", b'From: "Ren\xe9"')
    invite = parse_message(raw)
    assert isinstance(invite, Request)
    built = (
        build_ack(invite, parsed_response("SIP/2.0 404 Not Found"))
        if builder == "ack"
        else build_cancel(invite)
    )
    data = bytes(built)
    assert b'"Ren\xe9" <sip:alice@atlanta.example.com>' in data
    reparsed = parse_message(data)
    assert isinstance(reparsed, Request)
    assert reparsed.method == built.method
