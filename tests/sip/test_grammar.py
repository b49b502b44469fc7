"""The deliberate leniencies of _abnf.py (L1-L6) and _parser.py (P1-P3), one test each,
plus the grammar's guards against hostile input."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import pytest

from tests.support.messages import request, response
from triosip.sip import URI, NameAddr, ParseError, Request, Response, Via, parse_message

if TYPE_CHECKING:
    from collections.abc import Callable

N = 30000


def test_l1_token_display_name_may_touch_the_angle_bracket() -> None:
    assert NameAddr.parse("Bob<sip:bob@example.com>").display_name == "Bob"
    m = parse_message(request().replace(b"To: Bob <sip:", b"To: Bob<sip:"))
    assert m.to.display_name == "Bob"


def test_l2_received_may_be_bracketed_or_bare_ipv6() -> None:
    assert Via.parse("SIP/2.0/UDP h;received=[2001:db8::1]").received == "[2001:db8::1]"
    assert Via.parse("SIP/2.0/UDP h;received=2001:db8::1").received == "2001:db8::1"
    with pytest.raises(ParseError):
        Via.parse("SIP/2.0/UDP h;received=example.com")


def test_l3_tel_local_number_without_phone_context() -> None:
    uri = URI.parse("tel:1234")
    assert (uri.scheme, uri.user, str(uri)) == ("tel", "1234", "tel:1234")


def test_l4_non_utf8_bytes_in_display_names_are_kept() -> None:
    data = request().replace(b"From: Alice", b'From: "Al\xe9ce\xff"')
    m = parse_message(data)
    assert m.from_.display_name == "Al\udce9ce\udcff"
    assert bytes(m) == data


def test_l5_version_is_case_insensitive_but_only_2_0() -> None:
    m = parse_message(request(start_line="INVITE sip:bob@biloxi.example.com sip/2.0"))
    assert isinstance(m, Request)
    assert m.version == "sip/2.0"
    with pytest.raises(ParseError) as caught:
        parse_message(request(start_line="INVITE sip:bob@biloxi.example.com SIP/2.1"))
    assert caught.value.status == 505


def test_l6_reason_phrase_takes_any_text_but_controls() -> None:
    m = parse_message(response("SIP/2.0 404 Nicht gefunden \u2014 100%\tcertain"))
    assert isinstance(m, Response)
    assert m.reason == "Nicht gefunden \u2014 100%\tcertain"
    with pytest.raises(ParseError, match="Bad status line"):
        parse_message(response("SIP/2.0 404 Not\x07Found"))


def test_p1_leading_crlfs_are_skipped() -> None:
    assert bytes(parse_message(b"\r\n\r\n" + request())) == request()


def test_p2_bytes_after_the_body_are_discarded_and_no_length_means_the_rest() -> None:
    assert parse_message(request(body=b"abc") + b"trailing").body == b"abc"
    assert parse_message(request(length=None, body=b"rest")).body == b"rest"


def test_p3_max_forwards_is_checked_on_requests_only() -> None:
    with pytest.raises(ParseError, match="Max-Forwards"):
        parse_message(request("INVITE", "sip:b@h").replace(b"Max-Forwards: 70", b"Max-Forwards: x"))
    m = parse_message(response("SIP/2.0 200 OK", "Max-Forwards: x"))
    with pytest.raises(ParseError, match="Max-Forwards"):
        _ = m.max_forwards


def test_nul_is_refused_even_as_a_quoted_pair() -> None:
    # Stricter than RFC 3261 §25.1 (and RFC 4475 §3.1.1.3, which escapes a NUL in a
    # display name): a NUL truncates the message for C-string parsers downstream.
    with pytest.raises(ParseError, match="NUL"):
        parse_message(request().replace(b"From: Alice", b'From: "A\\\x00"'))


def test_repeated_capture_groups_never_raise_system_error() -> None:
    # This used to raise SystemError ("The span of capturing group is wrong") when the
    # Via parameters were a possessive repeat: CPython issue 101955.
    text = (
        "sip / 2.0 / tcp 192.0.2.1;Branch=z9hG4bKx;RECEIVED=192.0.2.200;rport=5061;ttl=16"
        ';maddr=224.2.0.1;ext;ext2="quoted ; value"'
    )
    assert Via.parse(text).ttl == 16
    assert NameAddr.parse('<sip:a@b>;x=1;tag=2;y="3"').tag == "2"


HOSTILE = [
    pytest.param(lambda: Via.parse("SIP/2.0/UDP [" + "1:" * N + "x]"), id="via-ipv6"),
    pytest.param(lambda: Via.parse("SIP/2.0/UDP h;received=" + "1:" * N + "x"), id="received"),
    pytest.param(lambda: Via.parse("SIP/2.0/UDP " + "a." * N + "-"), id="hostname-dots"),
    pytest.param(lambda: Via.parse("SIP/2.0/UDP a" + "-" * N + "!"), id="hostname-dashes"),
    pytest.param(lambda: Via.parse("SIP/2.0/UDP h" + ";a" * N + ";="), id="via-params"),
    pytest.param(lambda: NameAddr.parse("a " * N + "<"), id="display-tokens"),
    pytest.param(lambda: NameAddr.parse('"' + "\\a" * N), id="open-quote"),
    pytest.param(lambda: NameAddr.parse("<sip:a@b>" + ";x=y" * N + ";"), id="params"),
    pytest.param(lambda: URI.parse("sip:" + "a;" * N + "@"), id="uri-user"),
    pytest.param(lambda: URI.parse("sip:[" + "1:" * N + "]"), id="uri-ipv6"),
    pytest.param(lambda: URI.parse("tel:+" + "-" * N + "x"), id="tel"),
    pytest.param(
        lambda: parse_message(request("INVITE", "sip:b@h", "X: " + "\t" * N + "x"), max_size=10**6),
        id="long-line",
    ),
]


@pytest.mark.parametrize("read", HOSTILE)
def test_hostile_values_fail_in_linear_time(read: Callable[[], object]) -> None:
    # A pattern that backtracks through every split of a long run would take minutes here.
    started = time.perf_counter()
    with contextlib.suppress(ParseError):
        read()
    assert time.perf_counter() - started < 2.0
