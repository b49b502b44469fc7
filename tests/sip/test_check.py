"""check_message: once a received message is accepted, no field read and no proxy edit raises.

Before the check, about 6% of the messages the parser accepted in fuzzing raised later,
on the first read of a field the parser leaves for later: a bad or empty second Via (loop
detection reads them all), a bad Route (forwarding reads it), a bad Request-URI, or a
Route of bytes that are not UTF-8 (a UnicodeEncodeError, not even a ParseError, when the
proxy hashed or re-encoded it). Each case below was accepted, then raised.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.support.messages import FUZZ, SPECIAL, VALID, request, response
from triosip.proxy._forward import (
    RoutingError,
    has_looped,
    loop_hash,
    prepare_forward,
    stamp_received,
    strip_own_routes,
    target_of,
)
from triosip.sip import (
    ParseError,
    Request,
    Response,
    build_cancel,
    build_error_response,
    build_response,
    check_message,
    parse_message,
)
from triosip.transport import Address


def accept(data: bytes) -> Request | Response:
    """What the transport does with received bytes: parse, then check."""
    m = parse_message(data)
    check_message(m)
    return m


OURS = {("192.0.2.200", 5060)}
OUR_VIA = "SIP/2.0/UDP 192.0.2.200:5060;branch=z9hG4bK-ts0123456789.abcdef"
OUR_RR = "<sip:192.0.2.200:5060;lr>"
SOURCE = Address("udp", "198.51.100.7", 5099)


def read_everything(m: Request | Response) -> None:
    """Every accessor the proxy core may read, and every edit it makes: none may raise."""
    for via in m.via:
        _ = (via.host, via.port, via.sent_by, via.branch, via.received, via.rport)
        _ = (via.maddr, via.ttl, via.transport, via.protocol, dict(via.params))
    _ = m.top_via.branch
    for address in (*m.route, *m.record_route, *m.contact, m.from_, m.to):
        uri = address.uri
        _ = (uri.scheme, uri.host, uri.port, dict(uri.params), uri.transport, uri.user)
        _ = (address.tag, dict(address.params), address.display_name)
    _ = (m.contact_star, m.cseq.number, m.cseq.method, m.call_id, m.max_forwards)
    _ = (m.content_length, m.header_values("proxy-require"))
    # The edits of RFC 3261 §16.6 / §16.7, as triosip.proxy makes them.
    _ = bytes(m.without_first_value("via"))
    _ = bytes(m.with_header_first("via", OUR_VIA))
    _ = bytes(m.with_header_first("record-route", OUR_RR).with_max_forwards(69))
    _ = bytes(m.with_body(b"v=0\r\n", "application/sdp"))
    _ = bytes(m.without_first_value("route"))
    if isinstance(m, Request):
        _ = m.uri.host
        stripped, _had_routes = strip_own_routes(m, OURS)
        stamped = stamp_received(stripped, SOURCE)
        # A URI the proxy cannot route to is a RoutingError that the proxy answers.
        with contextlib.suppress(RoutingError):
            _ = target_of(stamped, None)
        forwarded = prepare_forward(stamped, record_route=(OUR_RR,))
        _ = bytes(forwarded.with_header_first("via", OUR_VIA))
        _ = loop_hash(m, m.top_via)
        _ = has_looped(m, OURS)
        _ = bytes(build_response(m, 400, "Bad Request", to_tag="t1"))
        _ = bytes(build_response(m, 503, to_tag="t1", headers=[("Retry-After", "5")]))
        if m.method == "INVITE":
            _ = bytes(build_cancel(m))


# -- one case per defect -------------------------------------------------------------------

REFUSED = [
    # (message, words of the reason); each used to be accepted and raise when read.
    pytest.param(
        request("INVITE", "sip:b@h", via="SIP/2.0/UDP h;branch=z9hG4bK-1, garbage"),
        "Bad Via",
        id="second-via-bad",
    ),
    pytest.param(
        request("INVITE", "sip:b@h", via="SIP/2.0/UDP h;branch=z9hG4bK-1, "),
        "Bad Via: empty",
        id="second-via-empty",
    ),
    pytest.param(
        request("INVITE", "sip:b@h", "Via: SIP/2.0/UDP h2:99999;branch=z9hG4bK-2"),
        "Bad Via: port 99999",
        id="second-via-line-bad-port",
    ),
    pytest.param(
        request("INVITE", "sip:b@h", "Via:"),
        "Bad Via: empty",
        id="second-via-line-empty",
    ),
    pytest.param(
        request("INVITE", "sip:b@h", "Via: SIP/2.0/UDP h2;ttl=300"),
        "Bad Via: ttl 300",
        id="second-via-ttl",
    ),
    pytest.param(
        request("INVITE", "sip:b@h", "Route: sip:no-brackets@h"),
        "Bad Route",
        id="route-no-brackets",
    ),
    pytest.param(
        request("INVITE", "sip:b@h", "Route: <sip:a@@b;lr>"),
        "Bad Route header: Bad SIP URI",
        id="route-bad-uri",
    ),
    pytest.param(
        request("INVITE", "sip:b@h", "Route: <sip:p1;lr>, "),
        "Bad Route",
        id="route-empty-element",
    ),
    pytest.param(
        request("INVITE", "sip:b@h", b'Route: "\xff\xfe" <sip:p1.example.com;lr>'),
        "Bad Route header: not UTF-8",
        id="route-not-utf8",
    ),
    pytest.param(
        request("INVITE", "sip:b@h", "Record-Route: <sip:ok@h;lr>, <sip:ok@-bad-host>"),
        "Bad Record-Route",
        id="record-route-bad-uri",
    ),
    pytest.param(
        request("INVITE", "sip:b@h", 'Contact: <sip:c@h>, "unterminated <sip:d@h>'),
        "Bad Contact",
        id="contact-unterminated",
    ),
    pytest.param(
        request("REGISTER", "sip:h", "Contact: *, <sip:c@h>"),
        "Bad Contact",
        id="contact-star-and-more",
    ),
    pytest.param(
        request("INVITE", "sip:b@h", "Contact: <sip:c@h:70000>"),
        "Bad Contact header: Bad SIP URI",
        id="contact-bad-port",
    ),
    pytest.param(
        request("INVITE", "sip:bob@bad_host_name"),
        "Bad Request-URI",
        id="request-uri-bad-host",
    ),
    pytest.param(request("INVITE", "bob"), "Bad Request-URI", id="request-uri-no-scheme"),
    pytest.param(
        request("INVITE", "sip:b@h").replace(b"<sip:alice@", b"<sip:alice@@"),
        "Bad From header: Bad SIP URI",
        id="from-uri",
    ),
    pytest.param(
        request("INVITE", "sip:b@h").replace(b"To: Bob <sip:bob@", b"To: Bob <sip:bob@-"),
        "Bad To header: Bad SIP URI",
        id="to-uri",
    ),
    pytest.param(
        request("INVITE", "sip:b@h").replace(b"From: Alice", b'From: "Al\xe9ce\xff"'),
        "Bad From header: not UTF-8",
        id="from-not-utf8",
    ),
    pytest.param(
        request("INVITE", "sip:b@h", b"Proxy-Require: caf\xe9"),
        "Bad Proxy-Require header: not UTF-8",
        id="proxy-require-not-utf8",
    ),
    pytest.param(
        response("SIP/2.0 200 OK", "Via: SIP/2.0/UDP h2;branch=z9hG4bK-2, ,"),
        "Bad Via: empty",
        id="response-second-via-empty",
    ),
    pytest.param(
        response("SIP/2.0 200 OK", "Max-Forwards: 300"),
        "Bad Max-Forwards",
        id="response-max-forwards",
    ),
    pytest.param(
        response("SIP/2.0 200 OK", "Record-Route: <sip:p1;lr>;x=\xe9".encode("latin-1")),
        "Bad Record-Route header: not UTF-8",
        id="response-record-route-not-utf8",
    ),
]


@pytest.mark.parametrize(("data", "words"), REFUSED)
def test_a_field_that_would_raise_later_is_refused_on_acceptance(data: bytes, words: str) -> None:
    m = parse_message(data)  # the parser accepts it: the field is read later...
    with pytest.raises(ParseError) as caught:
        check_message(m)  # ...and the check refuses it now, saying why
    error = caught.value
    assert error.status == 400
    assert words in error.reason
    assert "\r" not in error.reason
    assert "\n" not in error.reason
    answer = build_error_response(error, to_tag="chk")
    if isinstance(m, Response):
        assert error.is_request is False
        assert answer is None  # dropped (and counted by the caller)
        return
    # A request is answered 400 with the reason, as a parse error is.
    assert error.is_request is True
    assert error.method == m.method
    assert answer is not None
    again = parse_message(answer)
    assert isinstance(again, Response)
    assert (again.status, again.reason) == (400, error.reason)
    assert again.call_id == m.call_id
    assert again.to.tag == "chk"
    assert again.header_lines("via") == m.header_lines("via")  # every Via, as it came


# The proxy's loop hash and the CANCEL builder now keep what the parser decoded
# (surrogateescape), so non-UTF-8 bytes in these headers no longer raise when read; the
# check still refuses them, as it refuses non-UTF-8 in every header the core reads as text.
NO_LONGER_RAISES_WHEN_READ = {"proxy-require-not-utf8", "route-not-utf8", "from-not-utf8"}


@pytest.mark.parametrize(
    ("data", "words"), [case for case in REFUSED if case.id not in NO_LONGER_RAISES_WHEN_READ]
)
def test_without_the_check_the_same_message_raised_when_read(data: bytes, words: str) -> None:
    # This is what the check prevents: accepted by the parser, raising on the first read
    # or edit (ParseError, or a UnicodeEncodeError when the proxy hashed a Route).
    m = parse_message(data)
    with pytest.raises((ParseError, UnicodeEncodeError)):
        read_everything(m)


def test_an_ack_refused_by_the_check_is_not_answered() -> None:
    m = parse_message(request("ACK", "sip:b@h", "Route: <sip:a@@b;lr>"))
    with pytest.raises(ParseError) as caught:
        check_message(m)
    assert build_error_response(caught.value, to_tag="x") is None  # RFC 3261 §17.2.3


@pytest.mark.parametrize("name", list(VALID))
def test_every_valid_message_passes_and_reads_and_edits_without_error(name: str) -> None:
    read_everything(accept(VALID[name]))


def test_bytes_that_are_not_utf8_elsewhere_are_carried_byte_for_byte() -> None:
    # L4: a header the proxy only forwards may hold any bytes; edits keep them.
    data = request("INVITE", "sip:b@h", b"Subject: caf\xe9 \xff\xfe", b"X-Name: \xc3(")
    m = accept(data)
    read_everything(m)
    edited = m.with_header_first("via", OUR_VIA).with_max_forwards(69)
    assert b"Subject: caf\xe9 \xff\xfe\r\nX-Name: \xc3(\r\n" in bytes(edited)


def test_utf8_display_names_pass() -> None:
    data = request("INVITE", "sip:b@h", 'Route: "Zo\u00eb" <sip:p1.example.com;lr>')
    m = accept(data.replace(b"From: Alice", 'From: "Al\u00efce"'.encode()))
    read_everything(m)
    assert m.from_.display_name == "Al\u00efce"


def test_checking_twice_is_the_same() -> None:
    m = accept(VALID["folded headers"])
    check_message(m)


def test_uris_are_shared_between_messages_and_a_bad_one_is_refused_each_time() -> None:
    # The check builds every URI through a cache shared by all messages (the messages of
    # a dialog carry the same ones): what it remembers is only ever a valid URI.
    contact = "Contact: <sip:alice@192.0.2.101:5060;transport=udp>"
    first = accept(request("INVITE", "sip:bob@biloxi.example.com", contact))
    second = accept(request("BYE", "sip:bob@biloxi.example.com", contact, cseq="2 BYE"))
    assert second.contact[0].uri == first.contact[0].uri
    assert second.contact[0].uri.params == {"transport": "udp"}
    assert isinstance(first, Request)
    assert isinstance(second, Request)
    assert second.uri is first.uri
    for _ in range(2):
        with pytest.raises(ParseError, match="Bad Contact header"):
            accept(request("INVITE", "sip:b@h", "Contact: <sip:alice@@192.0.2.101>"))
    # A URI longer than what is remembered is checked all the same.
    long_user = "u" * 300
    m = accept(request("INVITE", f"sip:{long_user}@h", f"Contact: <sip:{long_user}@h>"))
    assert isinstance(m, Request)
    assert m.uri.user == long_user
    assert m.contact[0].uri.user == long_user
    with pytest.raises(ParseError, match="Bad Request-URI"):
        accept(request("INVITE", f"sip:{long_user}@@h"))


# -- any mutation of the fields the proxy reads: refused, or readable and editable --------

# Header lines that the seeds lack, so that the mutations reach every field the check reads.
EXTRA_LINES = [
    "Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK-2nd;received=192.0.2.5;rport=5062",
    "Via: SIP/2.0/TCP [2001:db8::9]:5070;branch=z9hG4bK-3rd;maddr=239.1.1.1;ttl=16",
    "Route: <sip:192.0.2.200:5060;lr>, <sip:p2.example.com;lr>",
    "Record-Route: <sip:p3.example.com;lr;transport=tcp>",
    'Contact: "Alice A" <sip:alice@192.0.2.101:5060>;expires=60, <tel:+15551234>',
    "Proxy-Require: foo",
    "Max-Forwards: 12",
]
MUTATED_NAMES = ["via", "route", "record-route", "contact", "from", "to", "proxy-require"]


@st.composite
def mutated_fields(draw: st.DrawFn) -> bytes:
    """A valid request or response with extra lines, up to two values mutated."""
    is_request = draw(st.booleans())
    extra = draw(st.lists(st.sampled_from(EXTRA_LINES), max_size=4, unique=True))
    if is_request:
        method = draw(st.sampled_from(["INVITE", "OPTIONS", "REGISTER", "ACK"]))
        uri = draw(st.sampled_from(["sip:bob@biloxi.example.com", "tel:+1555", "sip:[::1]"]))
        data = request(method, uri, *[line for line in extra if "Max-Forwards" not in line])
    else:
        data = response("SIP/2.0 180 Ringing", *extra)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    for _ in range(draw(st.integers(0, 2))):
        candidates = [
            n
            for n, line in enumerate(lines)
            if n == 0 or line.split(b":", 1)[0].lower().decode() in MUTATED_NAMES
        ]
        n = draw(st.sampled_from(candidates))
        line = lines[n]
        at = draw(st.integers(line.find(b":") + 1 if n else 0, len(line)))
        if draw(st.booleans()):
            piece = draw(st.sampled_from(SPECIAL))
        else:
            piece = draw(st.binary(min_size=1, max_size=4))
        cut = draw(st.integers(0, 3))
        lines[n] = line[:at] + piece + line[at + cut :]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@FUZZ
@given(st.one_of(mutated_fields(), st.sampled_from(list(VALID.values()))))
@example(request("INVITE", "sip:b@h", b'Route: "\xff" <sip:p1;lr>'))
def test_accepted_means_every_read_and_edit_works(data: bytes) -> None:
    try:
        m = accept(data)
    except ParseError as error:
        refused = error
    else:
        read_everything(m)
        return
    assert refused.reason
    assert "\r" not in refused.reason
    answer = build_error_response(refused, to_tag="fz")
    if answer is not None:
        assert isinstance(parse_message(answer), Response)


# -- the parser runs the rule itself on its fast path ---------------------------------------


def _slowly_parsed(data: bytes, monkeypatch: pytest.MonkeyPatch) -> Request | Response:
    # The message as the parser gives it without running the rule (the reference).
    with monkeypatch.context() as patched:
        patched.setattr("triosip.sip._parser.accept_parsed", lambda *_, **__: None)
        return parse_message(data)


def _checked(m: Request | Response) -> str | None:
    try:
        check_message(m)
    except ParseError as error:
        return error.reason
    return None


# The usual shapes (the others take the parser's careful path, or hold bytes above 0x7F,
# and are checked by check_message as before).
PLAIN = (
    "bench invite",
    "plain invite",
    "plain 200",
    "long values",
    "multipart binary",
    "unknown schemes and transports",
    "tel uri",
    "ipv6",
    "empty reason",
    "no content-length (udp)",
    "lower-case version",
    "combined via line",
    "record-route and route",
)


@pytest.mark.parametrize("name", PLAIN)
def test_a_plain_valid_message_is_accepted_in_the_parse_itself(name: str) -> None:
    m = parse_message(VALID[name])
    assert m._state.accepted  # check_message has nothing left to do
    check_message(m)
    read_everything(m)


@pytest.mark.parametrize(("data", "words"), REFUSED)
def test_what_the_check_refuses_the_parse_does_not_accept(data: bytes, words: str) -> None:
    m = parse_message(data)
    assert not m._state.accepted
    with pytest.raises(ParseError) as caught:
        check_message(m)
    assert words in caught.value.reason


@FUZZ
@given(st.one_of(mutated_fields(), st.sampled_from(list(VALID.values()))))
def test_the_parse_accepts_only_what_the_check_accepts(data: bytes) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        try:
            reference = _slowly_parsed(data, monkeypatch)
        except ParseError:
            return
    m = parse_message(data)
    expected = _checked(reference)
    if m._state.accepted:
        assert expected is None
    # And the same answer either way, with the same reason.
    assert _checked(m) == expected


@pytest.mark.parametrize(
    "extra",
    [
        # A list header's lines apart from each other, another header between them.
        ("Route: <sip:p1;lr>", "Contact: <sip:a@h>", "Route: <sip:p2;lr>, <sip:p3;lr>"),
        ("Record-Route: <sip:p1;lr>", "X-A: 1", "Record-Route: <sip:p2;lr>"),
        ("Contact: <sip:a@h>", "X-A: 1", "Contact: <sip:b@h>"),
        ("Via: SIP/2.0/UDP b;branch=z9hG4bK2", "X-A: 1", "Via: SIP/2.0/TCP c"),
    ],
)
def test_the_parse_reads_every_line_of_a_repeated_header(extra: tuple[str, ...]) -> None:
    # The parser's pass (_check.accept_parsed) finds a header's lines by their first and
    # last place: what it reads is what the accessors read on a message built by hand.
    for data in (request("BYE", "sip:b@h", *extra), response("SIP/2.0 200 OK", *extra)):
        m = parse_message(data)
        assert m._state.accepted
        check_message(m)
        by_hand = type(m)(**{f: getattr(m, f) for f in m.__dataclass_fields__})
        check_message(by_hand)
        assert m.route == by_hand.route
        assert m.record_route == by_hand.record_route
        assert m.contact == by_hand.contact
        assert m.via == by_hand.via


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (("Route: <sip:p1;lr>", "X-A: 1", "Route: <sip:p2;lr>, bad"), "Bad Route header"),
        (("Contact: <sip:a@h>", "X-A: 1", "Contact: <>"), "Bad Contact header"),
        (("Via: SIP/2.0/UDP b", "X-A: 1", "Via: nonsense"), "Bad Via"),
        (("Max-Forwards: 70",), "Several Max-Forwards header lines"),
    ],
)
def test_a_bad_later_line_of_a_repeated_header_is_refused(
    extra: tuple[str, ...], reason: str
) -> None:
    for data in (request("BYE", "sip:b@h", *extra), response("SIP/2.0 200 OK", *extra)):
        if reason.startswith("Several") and data.startswith(b"SIP/"):
            data = data.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nX-B: 2\r\n")
            data = data.replace(b"CSeq:", b"Max-Forwards: 69\r\nCSeq:", 1)
        with pytest.raises(ParseError) as caught:
            check_message(parse_message(data))
        assert caught.value.reason.startswith(reason), caught.value.reason
