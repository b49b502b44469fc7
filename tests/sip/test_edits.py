"""Proxy edits (RFC 3261 §16.6) and building responses (§8.2.6).

Every edit must leave the lines it did not touch byte for byte as they came, and the
message it was made from unchanged.
"""

from __future__ import annotations

import pytest

from tests.support.messages import VALID, request
from triosip.sip import (
    URI,
    LocalSIPError,
    ParseError,
    Request,
    Response,
    build_error_response,
    build_response,
    parse_message,
)

ODD = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"v: SIP/2.0/UDP a.example.com;branch=z9hG4bK-a , SIP/2.0/TCP b.example.com"
    b";branch=z9hG4bK-b\r\n"
    b"Via: SIP/2.0/UDP c.example.com;branch=z9hG4bK-c\r\n"
    b"MAX-FORWARDS :  10\r\n"
    b"To:   Bob <sip:bob@biloxi.example.com>\r\n"
    b"f: Alice <sip:alice@atlanta.example.com>;tag=88\r\n"
    b"Call-ID: odd@a.example.com\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Record-Route: <sip:rr1.example.com;lr>\r\n"
    b"X-Folded: one\r\n two\r\n"
    b"Subject: caf\xc3\xa9 \xff\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"body"
)


def parsed(data: bytes = ODD) -> Request:
    m = parse_message(data)
    assert isinstance(m, Request)
    return m


def wire_lines(m: Request | Response) -> list[bytes]:
    data = bytes(m)
    head, _, _ = data.partition(b"\r\n\r\n")
    # Folded lines stay together: split only where a new header starts.
    lines: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            lines[-1] += b"\r\n" + line
        else:
            lines.append(line)
    return lines


def untouched(before: list[bytes], after: list[bytes], *names: bytes) -> None:
    """Every line of `before` whose name is not in `names` is in `after`, in order."""
    keep = [line for line in before[1:] if line.split(b":")[0].strip().lower() not in names]
    rest = [line for line in after[1:] if line in keep]
    assert rest == keep


def test_unmodified_serializes_to_the_bytes_parsed() -> None:
    assert bytes(parsed()) == ODD


def test_push_via_goes_on_top_and_keeps_the_rest() -> None:
    m = parsed()
    pushed = m.with_header_first("via", "SIP/2.0/UDP proxy.example.net;branch=z9hG4bK-p")
    after = wire_lines(pushed)
    assert after[1] == b"Via: SIP/2.0/UDP proxy.example.net;branch=z9hG4bK-p"
    assert after[2:] == wire_lines(m)[1:]
    assert [v.branch for v in pushed.via] == [
        "z9hG4bK-p",
        "z9hG4bK-a",
        "z9hG4bK-b",
        "z9hG4bK-c",
    ]
    assert pushed.top_via.host == "proxy.example.net"
    assert pushed.body == b"body"
    # The original is a value: unchanged.
    assert bytes(m) == ODD
    assert m.top_via.branch == "z9hG4bK-a"


def test_pop_via_from_a_combined_line() -> None:
    m = parsed()
    popped = m.without_first_value("via")
    after = wire_lines(popped)
    assert after[1] == b"v: SIP/2.0/TCP b.example.com;branch=z9hG4bK-b"
    untouched(wire_lines(m), after, b"v")
    assert [v.branch for v in popped.via] == ["z9hG4bK-b", "z9hG4bK-c"]
    popped_again = popped.without_first_value("v")
    assert [v.branch for v in popped_again.via] == ["z9hG4bK-c"]
    assert wire_lines(popped_again)[1] == b"Via: SIP/2.0/UDP c.example.com;branch=z9hG4bK-c"
    last = popped_again.without_first_value("Via")
    assert not last.has_header("via")
    with pytest.raises(ParseError, match="Missing Via"):
        _ = last.top_via
    assert last.without_first_value("via") is last


def test_replace_the_first_value_in_one_edit() -> None:
    # RFC 3261 §18.2.1: the top Via, stamped with received, replaces the one that came.
    m = parsed()
    stamped = str(m.top_via.with_params(received="192.0.2.9"))
    replaced = m.with_first_value_replaced("via", stamped)
    after = wire_lines(replaced)
    assert after[1] == b"Via: " + stamped.encode()
    assert after[2] == b"v: SIP/2.0/TCP b.example.com;branch=z9hG4bK-b"
    untouched(wire_lines(m), after, b"v", b"via")
    assert [v.received for v in replaced.via] == ["192.0.2.9", None, None]
    assert [v.branch for v in replaced.via] == ["z9hG4bK-a", "z9hG4bK-b", "z9hG4bK-c"]
    # The same lines as the two edits it stands for, in any case.
    two_edits = m.without_first_value("via").with_header_first("via", stamped)
    assert bytes(replaced) == bytes(two_edits)
    # A value alone on its line: the line is replaced where it was.
    alone = replaced.without_first_value("via").without_first_value("via")
    alone_replaced = alone.with_first_value_replaced("via", stamped)
    assert wire_lines(alone_replaced)[1:3] == [b"Via: " + stamped.encode(), b"MAX-FORWARDS :  10"]
    assert len(alone_replaced.lines) == len(alone.lines)
    # Without the header: a new first line, as with_header_first puts it.
    no_route = m.with_first_value_replaced("route", "<sip:p.example.com;lr>")
    assert wire_lines(no_route)[1] == b"Route: <sip:p.example.com;lr>"
    assert bytes(m) == ODD
    with pytest.raises(LocalSIPError):
        m.with_first_value_replaced("via", "SIP/2.0/UDP x\r\nX-Injected: 1")


def test_serializing_twice_gives_the_same_bytes_and_edits_start_afresh() -> None:
    m = parsed()
    forwarded = m.with_max_forwards(9)
    first = bytes(forwarded)
    assert bytes(forwarded) == first
    # An edit of a serialized message is serialized anew.
    pushed = forwarded.with_header_first("via", "SIP/2.0/UDP p.example.net;branch=z9hG4bK-q")
    assert bytes(pushed) == first.replace(
        b"\r\n", b"\r\nVia: SIP/2.0/UDP p.example.net;branch=z9hG4bK-q\r\n", 1
    )
    assert bytes(pushed.with_body(b"other")).endswith(b"Content-Length: 5\r\n\r\nother")
    assert bytes(forwarded) == first


def test_max_forwards_decrement() -> None:
    m = parsed()
    assert m.max_forwards == 10
    forwarded = m.with_max_forwards(m.max_forwards - 1)
    after = wire_lines(forwarded)
    assert after[3] == b"Max-Forwards: 9"
    assert forwarded.max_forwards == 9
    untouched(wire_lines(m), after, b"max-forwards")
    assert len(after) == len(wire_lines(m))
    with pytest.raises(LocalSIPError):
        m.with_max_forwards(256)
    with pytest.raises(LocalSIPError):
        m.with_max_forwards(-1)


def test_max_forwards_added_when_absent() -> None:
    m = parsed(request().replace(b"Max-Forwards: 70\r\n", b""))
    assert m.max_forwards is None
    forwarded = m.with_max_forwards(70)
    assert wire_lines(forwarded)[-1] == b"Max-Forwards: 70"
    assert parse_message(bytes(forwarded)).max_forwards == 70


def test_record_route_goes_before_the_first_one() -> None:
    m = parsed()
    rr = m.with_header_first("Record-Route", "<sip:10.0.0.1;lr>")
    after = wire_lines(rr)
    position = after.index(b"Record-Route: <sip:10.0.0.1;lr>")
    assert after[position + 1] == b"Record-Route: <sip:rr1.example.com;lr>"
    assert [str(r.uri) for r in rr.record_route] == ["sip:10.0.0.1;lr", "sip:rr1.example.com;lr"]
    untouched(wire_lines(m), after, b"record-route")
    # Without any, on top of the header section.
    plain = parsed(request())
    first = plain.with_header_first("record-route", "<sip:10.0.0.1;lr>")
    assert wire_lines(first)[1] == b"Record-Route: <sip:10.0.0.1;lr>"


def test_with_uri_changes_only_the_request_line() -> None:
    m = parsed()
    moved = m.with_uri(URI.parse("sip:bob@192.0.2.4:5070;transport=tcp"))
    assert bytes(moved).split(b"\r\n", 1) == [
        b"INVITE sip:bob@192.0.2.4:5070;transport=tcp SIP/2.0",
        ODD.split(b"\r\n", 1)[1],
    ]
    assert moved.uri.port == 5070
    assert moved.uri_raw == "sip:bob@192.0.2.4:5070;transport=tcp"
    assert m.with_uri("tel:+1234").uri.scheme == "tel"
    for bad in ("", "sip:a b", "<sip:a>", "sip:a\r\nX: y"):
        with pytest.raises(LocalSIPError):
            m.with_uri(bad)


def test_a_proxy_chain_of_edits_serializes_and_parses_back() -> None:
    m = parsed(VALID["bench invite"])
    forwarded = (
        m.with_header_first("via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-ts1.2")
        .with_max_forwards(m.max_forwards - 1)  # type: ignore[operator]
        .with_header_first("record-route", "<sip:10.0.0.1;lr>")
    )
    again = parse_message(bytes(forwarded))
    assert isinstance(again, Request)
    assert again.top_via.branch == "z9hG4bK-ts1.2"
    assert again.via[1].branch == "z9hG4bK776asdhds"
    assert again.max_forwards == 69
    assert [str(r.uri) for r in again.record_route] == ["sip:10.0.0.1;lr"]
    assert again.body == m.body
    assert (again.call_id, again.cseq, again.from_.tag) == (m.call_id, m.cseq, m.from_.tag)
    untouched(wire_lines(m), wire_lines(forwarded), b"via", b"max-forwards", b"record-route")


def test_route_edits() -> None:
    m = parsed(VALID["record-route and route"])
    popped = m.without_first_value("route")
    assert wire_lines(popped)[7] == b"Route: <sip:p2.example.com;lr>"
    assert [str(r.uri) for r in popped.route] == ["sip:p2.example.com;lr", "sip:p3.example.com;lr"]
    strict = popped.with_header_last("Route", "<sip:bob@192.0.2.4>")
    assert wire_lines(strict)[-1] == b"Route: <sip:bob@192.0.2.4>"
    assert len(strict.route) == 3
    gone = m.without_header("route")
    assert gone.route == ()
    untouched(wire_lines(m), wire_lines(gone), b"route")
    replaced = m.with_header_replaced("route", "<sip:only.example.com;lr>")
    assert [str(r.uri) for r in replaced.route] == ["sip:only.example.com;lr"]
    assert replaced.header_lines("route") == ["<sip:only.example.com;lr>"]


def test_with_body_fixes_content_length() -> None:
    m = parsed()
    new = m.with_body(b"v=0\r\n", "application/sdp")
    assert new.body == b"v=0\r\n"
    assert new.content_length == 5
    again = parse_message(bytes(new))
    assert (again.body, again.header("content-type")) == (b"v=0\r\n", "application/sdp")


def test_edits_refuse_header_injection() -> None:
    m = parsed()
    for name, value in (("X-A", "a\r\nVia: evil"), ("X-A", "a\nb"), ("X A", "a"), ("", "a")):
        with pytest.raises(LocalSIPError):
            m.with_header_last(name, value)


def test_edits_keep_non_utf8_bytes() -> None:
    m = parsed()
    edited = m.with_header_first("via", "SIP/2.0/UDP p;branch=z9hG4bK-x")
    assert b"Subject: caf\xc3\xa9 \xff" in bytes(edited)
    assert b"X-Folded: one\r\n two" in bytes(edited)


def test_build_response_copies_what_8_2_6_says() -> None:
    m = parsed()
    ringing = build_response(m, 180, to_tag="a6c85cf", headers=[("Contact", "<sip:bob@h>")])
    lines = wire_lines(ringing)
    assert lines[0] == b"SIP/2.0 180 Ringing"
    assert lines[1:] == [
        b"v: SIP/2.0/UDP a.example.com;branch=z9hG4bK-a , SIP/2.0/TCP b.example.com"
        b";branch=z9hG4bK-b",
        b"Via: SIP/2.0/UDP c.example.com;branch=z9hG4bK-c",
        b"f: Alice <sip:alice@atlanta.example.com>;tag=88",
        b"To:   Bob <sip:bob@biloxi.example.com>;tag=a6c85cf",
        b"Call-ID: odd@a.example.com",
        b"CSeq: 7 INVITE",
        b"Contact: <sip:bob@h>",
        b"Content-Length: 0",
    ]
    assert ringing.to.tag == "a6c85cf"
    assert ringing.top_via.branch == "z9hG4bK-a"
    assert (ringing.status, ringing.reason) == (180, "Ringing")
    again = parse_message(bytes(ringing))
    assert isinstance(again, Response)
    assert again.to.tag == "a6c85cf"


def test_build_response_tags_and_reasons() -> None:
    m = parsed(VALID["plain invite"])
    trying = build_response(m, 100, to_tag="x")
    assert trying.to.tag is None  # §8.2.6.2: not on a 100
    assert build_response(m, 486).to.tag is None
    assert build_response(m, 299).reason == "Unknown"
    assert build_response(m, 200, "Fine", body=b"v=0\r\n").content_length == 5
    tagged = parsed(
        VALID["plain invite"].replace(
            b"<sip:bob@biloxi.example.com>", b"<sip:bob@biloxi.example.com>;tag=t0"
        )
    )
    assert build_response(tagged, 200, to_tag="new").to.tag == "t0"
    with pytest.raises(LocalSIPError):
        build_response(m, 99)
    with pytest.raises(LocalSIPError):
        build_response(m, 200, "OK\r\nX: y")


def test_build_response_to_a_100_copies_timestamp() -> None:
    m = parsed(request("INVITE", "sip:b@h", "Timestamp: 54"))
    assert b"\r\nTimestamp: 54\r\n" in bytes(build_response(m, 100))
    assert b"Timestamp" not in bytes(build_response(m, 180, to_tag="t"))


ERRORS = [
    # data, answered?, first line of the answer
    pytest.param(
        request(cseq="1 OPTIONS"),
        b"SIP/2.0 400 CSeq method does not match the request method",
        id="400",
    ),
    pytest.param(
        request(start_line="INVITE sip:b@h SIP/3.0"),
        b"SIP/2.0 505 SIP version SIP/3.0 not supported",
        id="505",
    ),
    pytest.param(request("ACK", cseq="1 ACK", length="x"), None, id="ack-is-never-answered"),
    pytest.param(request(via="SIP/2.0/UDP -bad-"), None, id="unusable-via"),
    pytest.param(
        request().replace(b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n", b""),
        None,
        id="no-call-id",
    ),
    pytest.param(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", None, id="response"),
    pytest.param(b"\x00\x01\x02\r\n\r\n", None, id="garbage"),
]


@pytest.mark.parametrize(("data", "first_line"), ERRORS)
def test_build_error_response(data: bytes, first_line: bytes | None) -> None:
    with pytest.raises(ParseError) as caught:
        parse_message(data)
    answer = build_error_response(caught.value, to_tag="err1")
    if first_line is None:
        assert answer is None
        return
    assert answer is not None
    assert answer.split(b"\r\n")[0] == first_line
    response = parse_message(answer)
    assert isinstance(response, Response)
    assert response.to.tag == "err1"
    assert response.top_via.branch == "z9hG4bK776asdhds"
    assert response.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert response.content_length == 0


def test_error_answer_keeps_an_existing_to_tag() -> None:
    data = request(cseq="1 OPTIONS").replace(b"biloxi.example.com>", b"biloxi.example.com>;tag=9")
    with pytest.raises(ParseError) as caught:
        parse_message(data)
    answer = build_error_response(caught.value, to_tag="err1")
    assert answer is not None
    assert parse_message(answer).to.tag == "9"


@pytest.mark.parametrize(
    "data",
    [
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n"
        b"Via: SIP/2.0/UDP b;branch=z9hG4bK2\r\nFrom: <sip:a@h>;tag=1\r\n"
        b"To: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 4\r\n\r\nbody",
        b"\r\n\r\nSIP/2.0 180  Ringing \xc3\xa9\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1\r\n"
        b"v: SIP/2.0/UDP b\r\n"
        b"f: <sip:a@h>;tag=1\r\nt: <sip:b@h>\r\ni: c\r\nCSeq: 1 INVITE\r\n\r\nextra",
        b"BYE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nVia: SIP/2.0/TCP b\r\n"
        b"From: <sip:a@h>;tag=1\r\n"
        b"To: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        # The top Via line folded (its CRLF is not the first one after the start line),
        # and folded with a second value that stays.
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n ;rport=5\r\n"
        b"Via: SIP/2.0/UDP b\r\nFrom: <sip:a@h>;tag=1\r\n"
        b"To: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1,\r\n\tSIP/2.0/UDP b\r\n"
        b"From: <sip:a@h>;tag=1\r\n"
        b"To: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_without_the_top_via_the_bytes_cut_are_the_bytes_joined(data: bytes) -> None:
    popped = parse_message(data).without_first_value("via")
    # An edit that changes nothing but drops the bytes: they are joined again.
    joined = popped.with_header_last("X-Probe", "1").without_header("x-probe")
    assert bytes(popped) == bytes(joined)
    assert parse_message(bytes(popped)).lines == popped.lines


@pytest.mark.parametrize(
    "routes",
    [
        ("Route: <sip:p1;lr>, <sip:p2;lr>",),
        ("Route: <sip:p1;lr>", "Route: <sip:p2;lr>, <sip:p3>"),
        ("Route: <sip:p1;lr>",),
    ],
)
def test_without_the_first_route_the_others_read_as_parsed(routes: tuple[str, ...]) -> None:
    m = parse_message(request("BYE", "sip:b@h", *routes))
    _ = m.route  # cached, as check_message leaves it
    popped = m.without_first_value("route")
    fresh = parse_message(bytes(popped))
    assert popped.route == fresh.route
    assert [str(entry.uri) for entry in popped.route] == [str(e.uri) for e in fresh.route]
