"""parse_message on valid and invalid datagrams (RFC 3261 §7, §20, §25; RFC 4475 in spirit).

Each valid case says what must come out; each invalid case names the status and a
fragment of the reason phrase the ParseError must carry.
"""

from __future__ import annotations

import pytest

from tests.support.messages import (
    BINARY_PART,
    LONG_VALUE,
    MANY_VIAS,
    MULTIPART_BODY,
    VALID,
    message,
    request,
    response,
)
from triosip.sip import ParseError, Request, Response, _parser, build_error_response, parse_message


def fields(data: bytes) -> dict[str, object]:
    """The fields of a parsed message that the tables below check."""
    m = parse_message(data)
    top = m.top_via
    out: dict[str, object] = {
        "transport": top.transport,
        "host": top.host,
        "port": top.port,
        "branch": top.branch,
        "call_id": m.call_id,
        "cseq": (m.cseq.number, m.cseq.method),
        "from_tag": m.from_.tag,
        "to_tag": m.to.tag,
        "vias": len(m.via),
    }
    if isinstance(m, Request):
        out["method"] = m.method
        out["uri"] = m.uri_raw
    else:
        out["status"] = (m.status, m.reason)
    return out


@pytest.mark.parametrize("name", list(VALID))
def test_valid_messages_parse_and_round_trip(name: str) -> None:
    data = VALID[name]
    m = parse_message(data)
    assert bytes(m) == data
    # Serializing from the lines (as after an edit) gives the same bytes too.
    rebuilt = b"\r\n".join(
        (
            m._start_line().encode("utf-8", "surrogateescape"),
            *(line.encode("utf-8", "surrogateescape") for line in m.lines),
            b"",
            b"",
        )
    )
    assert rebuilt + m.body == data


VALID_FIELDS = [
    pytest.param(
        VALID["whitespace around colons"],
        {
            "transport": "UDP",
            "host": "192.0.2.2",
            "port": None,
            "branch": "z9hG4bK-ws1",
            "call_id": "0ha0isndaksdj@192.0.2.2",
            "cseq": (8, "OPTIONS"),
            "from_tag": "98asjd8",
            "to_tag": None,
            "vias": 1,
            "method": "OPTIONS",
            "uri": "sip:carol@chicago.example.com",
        },
        id="whitespace",
    ),
    pytest.param(
        VALID["folded headers"],
        {
            "transport": "UDP",
            "host": "192.0.2.2",
            "port": None,
            "branch": "390skdjuw",
            "call_id": "0ha0isndaksdj@192.0.2.1",
            "cseq": (9, "INVITE"),
            "from_tag": "98asjd8",
            "to_tag": "1918181833n",
            "vias": 3,
            "method": "INVITE",
            "uri": "sip:vivekg@chair-dnrc.example.com;unknownparam",
        },
        id="folding",
    ),
    pytest.param(
        VALID["compact forms"],
        {
            "transport": "UDP",
            "host": "192.0.2.3",
            "port": 5060,
            "branch": "z9hG4bK-compact",
            "call_id": "compact@192.0.2.3",
            "cseq": (1, "MESSAGE"),
            "from_tag": "c1",
            "to_tag": None,
            "vias": 1,
            "method": "MESSAGE",
            "uri": "sip:bob@biloxi.example.com",
        },
        id="compact",
    ),
    pytest.param(
        VALID["odd tokens and methods"],
        {
            "transport": "TCP",
            "host": "host1.example.com",
            "port": None,
            "branch": "z9hG4bK-.!%66*_+`'~",
            "call_id": "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
            "cseq": (139122385, "!interesting-Method0123456789_*+`.%indeed'~"),
            "from_tag": "_token~1'+`*%!-.",
            "to_tag": None,
            "vias": 1,
            "method": "!interesting-Method0123456789_*+`.%indeed'~",
            "uri": "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,"
            "weird!*pas$wo~d_too.(doesn't-it)@example.com",
        },
        id="odd-tokens",
    ),
    pytest.param(
        VALID["ipv6"],
        {
            "transport": "UDP",
            "host": "[2001:db8::9:1]",
            "port": None,
            "branch": "z9hG4bKas3-111",
            "call_id": "SSG9559905523997077@hlau_4100",
            "cseq": (98176, "REGISTER"),
            "from_tag": "81x2",
            "to_tag": None,
            "vias": 2,
            "method": "REGISTER",
            "uri": "sip:[2001:db8::10]:5070",
        },
        id="ipv6",
    ),
    pytest.param(
        VALID["empty reason"],
        {
            "transport": "UDP",
            "host": "pc33.atlanta.example.com",
            "port": None,
            "branch": "z9hG4bK776asdhds",
            "call_id": "a84b4c76e66710@pc33.atlanta.example.com",
            "cseq": (314159, "INVITE"),
            "from_tag": "1928301774",
            "to_tag": "a6c85cf",
            "vias": 1,
            "status": (100, ""),
        },
        id="empty-reason",
    ),
    pytest.param(
        VALID["long values"],
        {
            "transport": "UDP",
            "host": "proxy1.example.net",
            "port": 5060,
            "branch": "z9hG4bK-hop1",
            "call_id": "longreq." + "onereallyreallyreallyreallyverylongcallid" * 20,
            "cseq": (3882340, "INVITE"),
            "from_tag": "12982" + "4" * 200,
            "to_tag": None,
            "vias": len(MANY_VIAS),
            "method": "INVITE",
            "uri": "sip:long" + "a" * 300 + "@example.net",
        },
        id="long",
    ),
]


@pytest.mark.parametrize(("data", "expected"), VALID_FIELDS)
def test_valid_message_fields(data: bytes, expected: dict[str, object]) -> None:
    assert fields(data) == expected


def test_headers_generic_access_is_case_insensitive_with_compact_forms() -> None:
    m = parse_message(VALID["compact forms"])
    assert m.header("Content-Type") == m.header("c") == m.header("CONTENT-TYPE") == "text/plain"
    assert m.header("Allow-Events") == "presence, dialog"
    assert m.header_values("u") == ["presence", "dialog"]
    assert m.header("refer-to") == "<sip:carol@example.com>"
    assert m.has_header("session-expires")
    assert not m.has_header("Route")
    assert m.header("route") is None
    assert m.header_lines("route") == []
    names = [h.name for h in m.headers]
    assert names[:5] == ["via", "to", "from", "call-id", "cseq"]
    assert m.headers[0].raw == b"v: SIP/2.0/UDP 192.0.2.3:5060;branch=z9hG4bK-compact"


def test_several_values_in_one_line_and_several_lines_of_one_header() -> None:
    m = parse_message(VALID["record-route and route"])
    assert m.header_lines("route") == [
        "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
        "<sip:p3.example.com;lr>",
    ]
    assert m.header_values("Route") == [
        "<sip:p1.example.com;lr>",
        "<sip:p2.example.com;lr>",
        "<sip:p3.example.com;lr>",
    ]
    assert [str(r.uri) for r in m.route] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
        "sip:p3.example.com;lr",
    ]
    assert [str(r.uri) for r in m.record_route] == ["sip:rr.example.com;lr"]


def test_folded_values_are_unfolded_when_read_and_kept_when_written() -> None:
    m = parse_message(VALID["folded headers"])
    assert m.header("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.header("subject") == ""
    raw = next(h.raw for h in m.headers if h.name == "newfangledheader")
    assert raw == b"NewFangledHeader:   newfangled value\r\n continued newfangled value"
    contact = m.contact[0]
    assert contact.display_name == 'Quoted string ""'
    assert dict(contact.params) == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert [v.branch for v in m.via] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert m.max_forwards == 68


def test_escapes_are_kept_as_they_came() -> None:
    m = parse_message(VALID["escapes"])
    assert isinstance(m, Request)
    assert m.uri.user == "sips%3Auser%40example.com"
    assert m.to.uri.user == "%75se%72"
    assert m.from_.display_name == '"Bob" \\ the x builder'
    assert m.from_.uri.user == "I%20have%20spaces"
    contact = m.contact[0]
    assert contact.display_name == 'café "au lait"'
    assert dict(contact.uri.params) == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}


def test_multipart_body_with_binary_parts_is_exact() -> None:
    data = VALID["multipart binary"]
    m = parse_message(data)
    assert m.body == MULTIPART_BODY
    assert BINARY_PART in m.body
    assert m.content_length == len(MULTIPART_BODY)
    assert m.header("content-type") == 'multipart/mixed;boundary="boundary42"'


def test_unknown_schemes_and_transports() -> None:
    m = parse_message(VALID["unknown schemes and transports"])
    assert isinstance(m, Request)
    assert (m.uri.scheme, m.uri.opaque, m.uri.host) == (
        "nobodyknowsthisscheme",
        "totallyopaquecontent",
        "",
    )
    assert m.top_via.transport == "FROBNICATE"
    assert [c.uri.scheme for c in m.contact] == ["soap.beep", "tel"]
    assert m.contact[1].uri.user == "+1-201-555-0123"
    assert dict(m.contact[1].uri.params) == {"ext": "22"}
    assert [r.uri.scheme for r in m.route] == ["im", "sips"]


def test_ipv6_references() -> None:
    m = parse_message(VALID["ipv6"])
    assert isinstance(m, Request)
    assert (m.uri.host, m.uri.port, m.uri.host_port) == (
        "[2001:db8::10]",
        5070,
        "[2001:db8::10]:5070",
    )
    first, second = m.via
    assert first.received == "2001:db8::9:255"
    assert second.sent_by == ("[::ffff:192.0.2.1]", 5060)
    assert second.maddr == "[2001:db8::1]"
    assert m.contact[0].uri.transport == "udp"


def test_datagram_without_content_length_has_the_rest_as_body() -> None:
    m = parse_message(VALID["no content-length (udp)"])
    assert m.body == b"the rest of the datagram"
    assert m.content_length == len(m.body)


def test_bytes_after_the_body_of_a_datagram_are_discarded() -> None:
    # P2 / RFC 3261 §18.3
    data = request(body=b"abc")
    m = parse_message(data + b"garbage after the body")
    assert m.body == b"abc"
    assert bytes(m) == data


def test_leading_crlfs_are_skipped() -> None:
    # P1 / RFC 3261 §7.5
    data = request()
    m = parse_message(b"\r\n\r\n\r\n" + data)
    assert bytes(m) == data


def test_response_fields() -> None:
    m = parse_message(VALID["reason with odd text"])
    assert isinstance(m, Response)
    assert (m.status, m.reason, m.version) == (699, "Ca\u00e7a va\tbien? 100% (yes)", "SIP/2.0")
    assert m.top_via.received == "192.0.2.1"
    assert m.max_forwards is None


def test_non_utf8_bytes_round_trip() -> None:
    # L4: bytes that are not UTF-8 are kept (surrogateescape) and written back as they came.
    data = request("INVITE", "sip:b@h", b"Subject: caf\xe9 \xff\xfe")
    m = parse_message(data)
    assert bytes(m) == data
    assert m.header("subject") == "caf\udce9 \udcff\udcfe"
    assert m.headers[-2].raw == b"Subject: caf\xe9 \xff\xfe"


INVALID = [
    # (data, status, reason fragment)
    pytest.param(request(length=50), 400, "larger than the 0 body bytes", id="cl-too-large"),
    pytest.param(request(length="-5"), 400, "Bad Content-Length -5", id="cl-negative"),
    pytest.param(
        request("INVITE", "sip:b@h", "l: 0"), 400, "Several Content-Length", id="cl-doubled"
    ),
    pytest.param(request(length="abc"), 400, "Bad Content-Length", id="cl-non-numeric"),
    pytest.param(request(length="1 2"), 400, "Bad Content-Length", id="cl-two-numbers"),
    pytest.param(request(cseq="2147483648 INVITE"), 400, "CSeq: number too large", id="cseq-2**31"),
    pytest.param(
        request(cseq="36893488147419103232 INVITE"),
        400,
        "CSeq: number too large",
        id="cseq-huge",
    ),
    pytest.param(request(cseq="abc INVITE"), 400, "Bad CSeq", id="cseq-non-numeric"),
    pytest.param(request(cseq="-1 INVITE"), 400, "Bad CSeq", id="cseq-negative"),
    pytest.param(request(cseq="1"), 400, "Bad CSeq", id="cseq-no-method"),
    pytest.param(request(cseq="1 OPTIONS"), 400, "CSeq method does not match", id="cseq-method"),
    pytest.param(request(cseq="1 invite"), 400, "CSeq method does not match", id="cseq-case"),
    pytest.param(
        request().replace(b"Max-Forwards: 70", b"Max-Forwards: 256"),
        400,
        "Bad Max-Forwards 256",
        id="max-forwards-256",
    ),
    pytest.param(
        request().replace(b"Max-Forwards: 70", b"Max-Forwards: 300000000000"),
        400,
        "Bad Max-Forwards",
        id="max-forwards-huge",
    ),
    pytest.param(
        request().replace(b"Max-Forwards: 70", b"Max-Forwards: seventy"),
        400,
        "Bad Max-Forwards",
        id="max-forwards-non-numeric",
    ),
    pytest.param(
        request("INVITE", "sip:b@h", "Max-Forwards: 69"),
        400,
        "Several Max-Forwards",
        id="max-forwards-doubled",
    ),
    pytest.param(
        request().replace(b"From: Alice", b'From: "Alice'),
        400,
        "From header: unterminated quoted string",
        id="unterminated-quote",
    ),
    pytest.param(
        request().replace(b"To: Bob", b'To: "Bob\\"'),
        400,
        "To header: unterminated quoted string",
        id="unterminated-escaped-quote",
    ),
    pytest.param(
        request().replace(b"<sip:bob@biloxi.example.com>", b"<sip:bob@biloxi.example.com"),
        400,
        "To header: unbalanced <>",
        id="unbalanced-angle",
    ),
    pytest.param(
        request(start_line="INVITE <sip:bob@b> SIP/2.0"),
        400,
        "<> around the Request-URI",
        id="angle-request-uri",
    ),
    pytest.param(
        request(start_line="INVITE sip:bob @b SIP/2.0"),
        400,
        "spaces inside the Request-URI",
        id="space-request-uri",
    ),
    pytest.param(
        request(start_line="INVITE  sip:bob@b SIP/2.0"), 400, "extra spaces", id="double-space"
    ),
    pytest.param(
        request(start_line="INVITE sip:bob@b SIP/2.0 "), 400, "extra spaces", id="trailing-space"
    ),
    pytest.param(
        request(start_line=" INVITE sip:bob@b SIP/2.0"), 400, "extra spaces", id="leading-space"
    ),
    pytest.param(
        request(start_line="INVITE sip:bob@b SIP/7.0"), 505, "SIP/7.0 not supported", id="v7"
    ),
    pytest.param(request(start_line="INVITE sip:bob@b SIP/2.01"), 505, "not supported", id="v2.01"),
    pytest.param(
        request(start_line="INVITE sip:bob@b HTTP/1.1"), 400, "version HTTP/1.1", id="http"
    ),
    pytest.param(
        request(start_line="INV(ITE sip:bob@b SIP/2.0"), 400, "is not a token", id="bad-method"
    ),
    pytest.param(
        request("INVITE", "sip:b@h", "This line has no colon"),
        400,
        "Header line without a colon",
        id="no-colon",
    ),
    pytest.param(
        request("INVITE", "sip:b@h", "X Bad: 1"), 400, "Bad header name X Bad", id="bad-name"
    ),
    pytest.param(
        request("INVITE", "sip:b@h", b"X-Nul: a\x00b"), 400, "NUL byte in a header", id="nul"
    ),
    pytest.param(
        request(start_line=b"INVITE sip:b\x00@h SIP/2.0"), 400, "NUL byte in the start", id="nul-sl"
    ),
    pytest.param(
        request().replace(b"To: Bob", b'To: "Bob\\\x00"'), 400, "NUL byte", id="nul-quoted-pair"
    ),
    pytest.param(request("INVITE", "sip:b@h", b"X-A: a\nb"), 400, "Bare CR or LF", id="bare-lf"),
    pytest.param(request("INVITE", "sip:b@h", b"X-A: a\rb"), 400, "Bare CR or LF", id="bare-cr"),
    pytest.param(
        request(start_line="INVITE sip:b@h SIP/2.0\r\n folded"),
        400,
        "starts with a folded line",
        id="folded-first-line",
    ),
    pytest.param(
        request().replace(
            b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n", b""
        ),
        400,
        "Missing Via",
        id="missing-via",
    ),
    pytest.param(
        request().replace(b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n", b""),
        400,
        "Missing From",
        id="missing-from",
    ),
    pytest.param(
        request().replace(b"To: Bob <sip:bob@biloxi.example.com>\r\n", b""),
        400,
        "Missing To",
        id="missing-to",
    ),
    pytest.param(
        request().replace(b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n", b""),
        400,
        "Missing Call-ID",
        id="missing-call-id",
    ),
    pytest.param(
        request().replace(b"CSeq: 314159 INVITE\r\n", b""), 400, "Missing CSeq", id="missing-cseq"
    ),
    pytest.param(
        request("INVITE", "sip:b@h", "f: <sip:x@y>;tag=2"), 400, "Several From", id="two-froms"
    ),
    pytest.param(
        request("INVITE", "sip:b@h", "i: other"), 400, "Several Call-ID", id="two-call-ids"
    ),
    pytest.param(
        request().replace(b"a84b4c76e66710@pc33.atlanta.example.com", b""),
        400,
        "Bad Call-ID: empty",
        id="empty-call-id",
    ),
    pytest.param(
        request().replace(b"a84b4c76e66710@pc33", b"a84b4c76 e66710@pc33"),
        400,
        "Bad Call-ID",
        id="space-call-id",
    ),
    pytest.param(request(via="SIP/2.0/UDP h;ttl=300"), 400, "Bad Via: ttl 300", id="via-ttl"),
    pytest.param(request(via="SIP/2.0/UDP h:70000"), 400, "Bad Via: port 70000", id="via-port"),
    pytest.param(request(via="SIP/2.0/UDP h;rport=99999"), 400, "Bad Via: rport", id="via-rport"),
    pytest.param(request(via='SIP/2.0/UDP h;branch="x"'), 400, "Bad Via", id="via-branch-quoted"),
    pytest.param(request(via="SIP/2.0/UDP h;received=host"), 400, "Bad Via", id="via-received"),
    pytest.param(request(via="SIP/2.0/UDP"), 400, "Bad Via", id="via-no-sent-by"),
    pytest.param(request(via="SIP/2.0 h"), 400, "Bad Via", id="via-no-transport"),
    pytest.param(request(via="SIP/2.0/UDP -h-"), 400, "Bad Via", id="via-bad-host"),
    pytest.param(
        request().replace(b"bob@biloxi.example.com>", b"bob@biloxi.example.com>;tag="),
        400,
        "Bad To header",
        id="empty-tag",
    ),
    pytest.param(
        request().replace(b"From: Alice <sip:alice@atlanta.example.com>", b"From: sip:a@b?x=1"),
        400,
        "Bad From header",
        id="addr-spec-with-headers",
    ),
    pytest.param(response("SIP/2.0 99 Low"), 400, "Bad status line", id="status-99"),
    pytest.param(response("SIP/2.0 700 High"), 400, "Bad status line", id="status-700"),
    pytest.param(response("SIP/2.0 200"), 400, "Bad status line", id="status-no-space"),
    pytest.param(response("SIP/3.0 200 OK"), 505, "not supported", id="response-version"),
    pytest.param(b"INVITE sip:b@h SIP/2.0\r\nVia: x\r\n", 400, "No blank line", id="no-blank"),
    pytest.param(b"", 400, "Empty message", id="empty"),
    pytest.param(b"\r\n\r\n", 400, "Empty message", id="only-crlf"),
    pytest.param(bytes(range(256)) * 3, 400, "No blank line", id="garbage"),
    pytest.param(b"\xff\xfe\x00\x01\r\n\r\n", 400, "NUL byte", id="garbage-with-blank-line"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\xfc\x03\x03\r\n\r\n", 400, "NUL byte", id="tls-hello"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "version HTTP/1.1", id="http-get"),
]


@pytest.mark.parametrize(("data", "status", "reason"), INVALID)
def test_invalid_messages_raise_parse_error(data: bytes, status: int, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_message(data)
    assert caught.value.status == status
    assert reason in caught.value.reason
    assert str(caught.value) == f"{status} {caught.value.reason}"
    assert "\r" not in caught.value.reason
    assert "\n" not in caught.value.reason


# The cases that reach the header section (the others fail before either path runs).
WITH_HEAD = [
    case
    for case in INVALID
    if isinstance(data := case.values[0], bytes) and data.find(b"\r\n\r\n") > 0
]


@pytest.mark.parametrize(("data", "status", "reason"), WITH_HEAD)
def test_careful_path_gives_the_same_errors(data: bytes, status: int, reason: str) -> None:
    # The fast path hands every failure to the careful path; call that directly too.
    end = data.find(b"\r\n\r\n")
    head = data[:end].decode("utf-8", "surrogateescape")
    with pytest.raises(ParseError) as caught:
        _parser._parse_carefully(data, 0, end, head, stream=False)
    assert (caught.value.status, reason in caught.value.reason) == (status, True)


def test_message_over_max_size_is_413() -> None:
    with pytest.raises(ParseError) as caught:
        parse_message(request(body=b"x" * 2000), max_size=1000)
    assert caught.value.status == 413


def test_error_carries_what_answering_needs() -> None:
    data = request(cseq="1 OPTIONS", via="SIP/2.0/UDP a.example.com;branch=z9hG4bK-e1")
    with pytest.raises(ParseError) as caught:
        parse_message(data)
    error = caught.value
    assert error.is_request is True
    assert error.method == "INVITE"
    assert [h.name for h in error.answer] == ["via", "to", "from", "call-id", "cseq"]
    assert error.answer[0].raw == b"Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK-e1"


def test_error_of_a_response_is_not_a_request() -> None:
    with pytest.raises(ParseError) as caught:
        parse_message(response("SIP/2.0 200 OK", "CSeq: 2 INVITE"))
    assert caught.value.is_request is False
    assert caught.value.method is None
    assert build_error_response(caught.value, to_tag="x") is None


def test_max_forwards_of_a_response_is_checked_when_read() -> None:
    # P3: a response with a bad Max-Forwards is accepted; reading it raises.
    m = parse_message(response("SIP/2.0 200 OK", "Max-Forwards: 300"))
    with pytest.raises(ParseError, match="Max-Forwards"):
        _ = m.max_forwards


def test_lazy_accessors_raise_parse_error() -> None:
    # This used to be where sippy raised IndexError / ValueError: never here.
    data = message(
        "INVITE sip:bob@bad_host_name SIP/2.0",
        "Via: SIP/2.0/UDP h;branch=z9hG4bK-1, garbage",
        "From: <sip:a@@b>;tag=1",
        "To: <sip:b@h>",
        "Call-ID: lazy",
        "CSeq: 1 INVITE",
        "Route: sip:no-brackets@h",
        "Record-Route: <sip:ok@h>, ",
        'Contact: <sip:c@h>;expires=1, "unterminated <sip:d@h>',
    )
    m = parse_message(data)
    assert isinstance(m, Request)
    for read in (
        lambda: m.uri,
        lambda: m.via,
        lambda: m.from_.uri,
        lambda: m.route,
        lambda: m.record_route,
        lambda: m.contact,
    ):
        with pytest.raises(ParseError):
            read()
    assert m.to.uri.host == "h"
    assert m.top_via.branch == "z9hG4bK-1"


def test_long_header_value_is_kept() -> None:
    m = parse_message(VALID["long values"])
    assert m.header("x-long") == LONG_VALUE
