"""`LocalNames`: what the proxy calls itself, and what is "myself" (real sockets probe the
machine's addresses; nothing is sent)."""

from __future__ import annotations

import re

import pytest

from triosip.transport import Address, LocalNames, parse_host_port


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.5", ("203.0.113.5", None)),
        ("Sip.Example.COM:5080", ("sip.example.com", 5080)),
        ("[2001:DB8::1]:5061", ("2001:db8::1", 5061)),
        ("2001:db8::1", ("2001:db8::1", None)),
    ],
)
def test_host_port_parses(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("a b", "is not a host name"),
        ("host:0", "the port must be a number 1-65535"),
        ("host:x", "the port must be"),
        ("[::1", "write [IPv6]"),
        ("", "is not a host name"),
    ],
)
def test_bad_host_port_says_what_to_fix(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_host_port(text)


UDP_ANY = Address("udp", "0.0.0.0", 5060)
TCP_ANY = Address("tcp", "0.0.0.0", 5060)
UDP_LOOPBACK = Address("udp", "127.0.0.1", 5070)


def test_myself() -> None:
    names = LocalNames(
        [UDP_ANY, UDP_LOOPBACK],
        {UDP_LOOPBACK: ("sip.example.com", None)},
        [("alias.example.com", None), ("other.example.com", 7000)],
    )
    assert ("127.0.0.1", 5060) in names  # a local address, on the wildcard's port
    assert ("127.0.0.9", 5060) in names  # all of 127/8 is local
    assert ("192.0.2.1", 5060) not in names  # TEST-NET-1: not this machine
    assert ("0.0.0.0", 5060) not in names  # a wildcard is no address to send to
    assert ("127.0.0.1", 5070) in names
    assert ("127.0.0.2", 5070) not in names  # bound to 127.0.0.1 only
    assert ("sip.example.com", 5070) in names
    assert ("alias.example.com", 5060) in names
    assert ("alias.example.com", 5070) in names
    assert ("other.example.com", 7000) in names
    assert ("other.example.com", 5060) not in names
    assert ("::1", 5060) not in names  # no IPv6 wildcard


def test_what_via_and_record_route_name() -> None:
    plain = LocalNames([UDP_ANY, TCP_ANY, UDP_LOOPBACK], {})
    assert plain.advertised(UDP_ANY, "127.0.0.5") == Address("udp", "127.0.0.1", 5060)
    assert plain.advertised(UDP_LOOPBACK, "127.0.0.5") == UDP_LOOPBACK
    advertised = LocalNames([UDP_ANY, TCP_ANY], {TCP_ANY: ("203.0.113.5", 5080)})
    named = Address("tcp", "203.0.113.5", 5080)
    assert advertised.advertised(TCP_ANY, "127.0.0.5") == named
    # A TCP connection accepted on the wildcard listener names its real local address.
    assert advertised.advertised(Address("tcp", "127.0.0.1", 5060), "127.0.0.5") == named
