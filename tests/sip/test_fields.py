"""Typed header values: URI, Via, NameAddr, CSeq, and the leniencies of _abnf.py."""

from __future__ import annotations

import dataclasses

import pytest

from tests.support.messages import request
from triosip.sip import (
    KEEP,
    URI,
    CSeq,
    LocalSIPError,
    NameAddr,
    ParseError,
    Via,
    parse_message,
)
from triosip.sip._text import split_commas

URIS = [
    # text, scheme, user, password, host, port, params, headers
    (
        "sip:alice@atlanta.example.com",
        "sip",
        "alice",
        None,
        "atlanta.example.com",
        None,
        {},
        {},
    ),
    (
        "SIPS:alice:secret@192.0.2.4:5061;transport=TCP;lr;maddr=239.255.255.1?subject=hi&x=%20",
        "sips",
        "alice",
        "secret",
        "192.0.2.4",
        5061,
        {"transport": "TCP", "lr": None, "maddr": "239.255.255.1"},
        {"subject": "hi", "x": "%20"},
    ),
    ("sip:[2001:db8::1]:5070", "sip", None, None, "[2001:db8::1]", 5070, {}, {}),
    ("sip:[::ffff:192.0.2.1]", "sip", None, None, "[::ffff:192.0.2.1]", None, {}, {}),
    ("sip:example.com.", "sip", None, None, "example.com.", None, {}, {}),
    (
        "sip:%61lice;x=%41@h;P%61ram=V%61lue",
        "sip",
        "%61lice;x=%41",
        None,
        "h",
        None,
        {"p%61ram": "V%61lue"},
        {},
    ),
    (
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sip",
        "+1-212-555-1212",
        "1234",
        "gateway.com",
        None,
        {"user": "phone"},
        {},
    ),
    (
        "tel:+1-201-555-0123;ext=22;isub=x",
        "tel",
        "+1-201-555-0123",
        None,
        "",
        None,
        {"ext": "22", "isub": "x"},
        {},
    ),
    # L3: a local number without phone-context
    (
        "tel:7042;phone-context=example.com",
        "tel",
        "7042",
        None,
        "",
        None,
        {"phone-context": "example.com"},
        {},
    ),
    ("tel:*67#", "tel", "*67#", None, "", None, {}, {}),
    ("mailto:alice@example.com", "mailto", None, None, "", None, {}, {}),
    ("urn:service:sos", "urn", None, None, "", None, {}, {}),
]


@pytest.mark.parametrize(
    ("text", "scheme", "user", "password", "host", "port", "params", "headers"), URIS
)
def test_uri_parse(
    text: str,
    scheme: str,
    user: str | None,
    password: str | None,
    host: str,
    port: int | None,
    params: dict[str, str | None],
    headers: dict[str, str],
) -> None:
    uri = URI.parse(text)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        scheme,
        user,
        password,
        host,
        port,
    )
    assert dict(uri.params) == params
    assert dict(uri.headers) == headers
    assert str(uri) == text
    assert uri == URI(text)
    assert hash(uri) == hash(URI(text))


BAD_URIS = [
    ("sip:", "Bad SIP URI"),
    ("sip:alice@", "Bad SIP URI"),
    ("sip:alice@host:99999", "Bad SIP URI"),
    ("sip:alice@host:65536", "Bad SIP URI"),
    ("sip:alice@-host", "Bad SIP URI"),
    ("sip:al ice@host", "Bad SIP URI"),
    ("sip:alice@[2001:db8::1", "Bad SIP URI"),
    ("sip:alice@host;=x", "Bad SIP URI"),
    ("sip:alice@host?x", "Bad SIP URI"),
    ("sip:%zz@host", "Bad SIP URI"),
    ("tel:", "Bad tel URI"),
    ("tel:+", "Bad tel URI"),
    ("tel:+1;=x", "Bad tel URI"),
    ("nocolon", "Bad URI"),
    ("1abc:x", "Bad URI"),
    ("x:a b", "Bad URI"),
    ("", "Bad URI"),
]


@pytest.mark.parametrize(("text", "reason"), BAD_URIS)
def test_bad_uris_raise_parse_error(text: str, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        URI.parse(text)
    assert reason in caught.value.reason


def test_uri_replace_recomposes() -> None:
    uri = URI.parse("sip:alice@atlanta.example.com;transport=tcp")
    moved = uri.replace(host="192.0.2.9", port=5080)
    assert str(moved) == "sip:alice@192.0.2.9:5080;transport=tcp"
    assert moved.transport == "tcp"
    anonymous = moved.replace(user=None, port=None, params={"lr": None})
    assert str(anonymous) == "sip:192.0.2.9;lr"
    assert uri.replace() == URI("sip:alice@atlanta.example.com;transport=tcp")
    assert str(URI.parse("tel:+1234").replace(params={"ext": "5"})) == "tel:+1234;ext=5"
    with pytest.raises(LocalSIPError):
        uri.replace(host="bad host")
    with pytest.raises(LocalSIPError):
        URI.parse("mailto:a@b").replace(user="x")
    assert repr(KEEP) == "KEEP"


VIAS = [
    # text, protocol, transport, host, port, branch, received, rport, maddr, ttl
    (
        "SIP/2.0/UDP pc33.atlanta.example.com:5066;branch=z9hG4bK776asdhds;rport",
        "SIP/2.0",
        "UDP",
        "pc33.atlanta.example.com",
        5066,
        "z9hG4bK776asdhds",
        None,
        "",
        None,
        None,
    ),
    (
        "sip / 2.0 / tcp 192.0.2.1;Branch=z9hG4bKx;RECEIVED=192.0.2.200;rport=5061;ttl=16"
        ';maddr=224.2.0.1;ext;ext2="quoted ; value"',
        "SIP/2.0",
        "TCP",
        "192.0.2.1",
        None,
        "z9hG4bKx",
        "192.0.2.200",
        "5061",
        "224.2.0.1",
        16,
    ),
    (
        "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK56sdasks",
        "SIP/2.0",
        "WSS",
        "df7jal23ls0d.invalid",
        None,
        "z9hG4bK56sdasks",
        None,
        None,
        None,
        None,
    ),
    # L2: received with a bracketed IPv6 reference, and with a bare IPv6 address
    (
        "SIP/2.0/UDP [2001:db8::9:1]:5060;received=[2001:db8::9:255];branch=b",
        "SIP/2.0",
        "UDP",
        "[2001:db8::9:1]",
        5060,
        "b",
        "[2001:db8::9:255]",
        None,
        None,
        None,
    ),
    (
        "SIP/2.0/UDP h;received=2001:db8::9:255;branch=b",
        "SIP/2.0",
        "UDP",
        "h",
        None,
        "b",
        "2001:db8::9:255",
        None,
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    (
        "text",
        "protocol",
        "transport",
        "host",
        "port",
        "branch",
        "received",
        "rport",
        "maddr",
        "ttl",
    ),
    VIAS,
)
def test_via_parse(
    text: str,
    protocol: str,
    transport: str,
    host: str,
    port: int | None,
    branch: str | None,
    received: str | None,
    rport: str | None,
    maddr: str | None,
    ttl: int | None,
) -> None:
    via = Via.parse(text)
    assert (via.protocol, via.transport, via.host, via.port, via.branch) == (
        protocol,
        transport,
        host,
        port,
        branch,
    )
    assert (via.received, via.rport, via.has_rport, via.maddr, via.ttl) == (
        received,
        rport,
        rport is not None,
        maddr,
        ttl,
    )
    assert via.sent_by == (host, port)
    assert str(via) == text
    assert via.params.get("branch") == branch


def test_via_params_keep_values_as_they_came() -> None:
    via = Via.parse('SIP/2.0/UDP h;Branch=AbC;ext2="quoted ; value";flag;received=2001:db8::1')
    assert dict(via.params) == {
        "branch": "AbC",
        "ext2": '"quoted ; value"',
        "flag": None,
        "received": "2001:db8::1",
    }


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP h, SIP/2.0/UDP g",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP h;ttl=256",
        "SIP/2.0/UDP h;branch=",
        "SIP/2.0/UDP h;maddr=-x-",
        "SIP/2.0/UDP h;rport=x",
        "SIP/2.0/UDP h;received=example.com",
        "SIP/2.0/UDP h:65536",
        "SIP/2.0/UDP h;;x",
    ],
)
def test_bad_vias(text: str) -> None:
    with pytest.raises(ParseError, match="Bad Via"):
        Via.parse(text)


def test_via_make_and_with_params() -> None:
    via = Via.make("udp", "192.0.2.1", 5060, branch="z9hG4bK-1", rport=None)
    assert str(via) == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1;rport"
    stamped = via.with_params(received="198.51.100.7", rport="40000")
    assert str(stamped) == (
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1;rport=40000;received=198.51.100.7"
    )
    assert (stamped.rport, stamped.received) == ("40000", "198.51.100.7")
    # The sent-protocol and sent-by keep their spelling; the parameters are rewritten
    # without the whitespace around their separators.
    odd = Via.parse("SIP / 2.0 / udp  host.example.com ; Branch = b")
    assert str(odd.with_params(rport="1")) == "SIP / 2.0 / udp  host.example.com;branch=b;rport=1"
    with pytest.raises(LocalSIPError):
        via.with_params(ttl="1000")
    with pytest.raises(LocalSIPError):
        Via.make("UDP", "bad host")


NAME_ADDRS = [
    # text, display name, uri, params
    ("<sip:alice@example.com>", None, "sip:alice@example.com", {}),
    ("Alice <sip:alice@example.com>;tag=1", "Alice", "sip:alice@example.com", {"tag": "1"}),
    # L1: no space needed between a token display name and <
    ("Bob<sip:bob@example.com>", "Bob", "sip:bob@example.com", {}),
    ('"Mr. \\"Q\\" \\\\ Public" <sip:q@example.com>', 'Mr. "Q" \\ Public', "sip:q@example.com", {}),
    ('"" <sip:anonymous@anonymous.invalid>', "", "sip:anonymous@anonymous.invalid", {}),
    ("sip:carol@example.com;tag=x;foo", None, "sip:carol@example.com", {"tag": "x", "foo": None}),
    (
        '<sip:c@h;lr>;expires=60;q=0.5;+sip.instance="<urn:uuid:1>"',
        None,
        "sip:c@h;lr",
        {"expires": "60", "q": "0.5", "+sip.instance": '"<urn:uuid:1>"'},
    ),
    ("tel:+1234", None, "tel:+1234", {}),
    ("A  B   C <urn:x:y>", "A  B   C", "urn:x:y", {}),
    # L4: bytes that are not UTF-8 inside a quoted display name
    ('"caf\udce9" <sip:c@h>', "caf\udce9", "sip:c@h", {}),
]


@pytest.mark.parametrize(("text", "display_name", "uri", "params"), NAME_ADDRS)
def test_name_addr_parse(
    text: str, display_name: str | None, uri: str, params: dict[str, str | None]
) -> None:
    addr = NameAddr.parse(text)
    assert addr.display_name == display_name
    assert str(addr.uri) == uri == addr.uri_text
    assert dict(addr.params) == params
    assert addr.tag == params.get("tag")
    assert str(addr) == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('"Alice <sip:a@b>', "unterminated quoted string"),
        ("<sip:a@b", "unbalanced <>"),
        ("", "empty value"),
        ("<sip:a@b>;tag", "Bad address"),
        ('<sip:a@b>;tag="q"', "Bad address"),
        ("sip:a@b?subject=x", "Bad address"),
        ("<sip:a b@c>", "Bad address"),
        ("Al@ce <sip:a@b>", "Bad address"),
    ],
)
def test_bad_name_addrs(text: str, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        NameAddr.parse(text)
    assert reason in caught.value.reason


def test_name_addr_make_and_with_tag() -> None:
    addr = NameAddr.make("sip:bob@example.com", 'The "Bob"')
    assert str(addr) == '"The \\"Bob\\"" <sip:bob@example.com>'
    assert addr.display_name == 'The "Bob"'
    tagged = addr.with_tag("a6c85cf")
    assert str(tagged) == '"The \\"Bob\\"" <sip:bob@example.com>;tag=a6c85cf'
    assert tagged.with_tag("other").tag == "other"
    assert NameAddr.parse("sip:x@y;tag=1").with_tag("2").text == "sip:x@y;tag=2"
    with pytest.raises(LocalSIPError):
        addr.with_tag("not a token")


def test_cseq() -> None:
    assert CSeq.parse("2147483647 INVITE") == CSeq(2**31 - 1, "INVITE")
    assert str(CSeq(1, "ACK")) == "1 ACK"
    with pytest.raises(ParseError, match="number too large"):
        CSeq.parse("2147483648 INVITE")
    with pytest.raises(ParseError, match="Bad CSeq"):
        CSeq.parse("1 INV ITE")


def test_values_are_frozen() -> None:
    via = Via.parse("SIP/2.0/UDP h")
    with pytest.raises(dataclasses.FrozenInstanceError):
        via.text = "x"  # type: ignore[misc]
    m = parse_message(request())
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.body = b""  # type: ignore[misc]
    with pytest.raises(TypeError):
        via.params["branch"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("value", "elements"),
    [
        ("a, b ,c", ["a", "b", "c"]),
        ('"x, y" <sip:a@b>, <sip:c,d@e>', ['"x, y" <sip:a@b>', "<sip:c,d@e>"]),
        ('"esc \\", still" <sip:a@b>, c', ['"esc \\", still" <sip:a@b>', "c"]),
        ("a,,b,", ["a", "", "b", ""]),
        ('"unterminated, x', ['"unterminated, x']),
        ("<open, x", ["<open, x"]),
        ("", [""]),
    ],
)
def test_split_commas(value: str, elements: list[str]) -> None:
    assert split_commas(value) == elements
