"""Addresses, ``--listen`` specs and RFC 3261 §18.2.2 / RFC 3581 response destinations.

Synchronous and table-driven: no sockets here.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.transport import request
from triosip.sip import parse_message
from triosip.transport import Address, TransportLimits, parse_listen_spec, response_destination

# --- Address -------------------------------------------------------------------------------


def test_address_text_forms() -> None:
    v4 = Address("udp", "127.0.0.1", 5060)
    v6 = Address("tcp", "::1", 5070)
    assert str(v4) == "udp:127.0.0.1:5060"
    assert str(v6) == "tcp:[::1]:5070"
    assert v4.host_for_uri == "127.0.0.1"
    assert v6.host_for_uri == "[::1]"
    assert v6.host_port == "[::1]:5070"
    assert (v4.is_ipv6, v6.is_ipv6) == (False, True)
    assert (v4.reliable, v6.reliable) == (False, True)


def test_address_is_a_value() -> None:
    assert Address("udp", "127.0.0.1", 5060) == Address("udp", "127.0.0.1", 5060)
    assert len({Address("udp", "127.0.0.1", 5060), Address("udp", "127.0.0.1", 5060)}) == 1


# --- parse_listen_spec -------------------------------------------------------------------------

GOOD_SPECS = [
    ("udp:127.0.0.1:5060", Address("udp", "127.0.0.1", 5060)),
    ("tcp:[::1]:5070", Address("tcp", "::1", 5070)),
    ("udp:127.0.0.1", Address("udp", "127.0.0.1", 5060)),
    ("tcp:[::1]", Address("tcp", "::1", 5060)),
    ("UDP:127.0.0.1:0", Address("udp", "127.0.0.1", 0)),
    ("tcp:[2001:DB8:0::1]:5062", Address("tcp", "2001:db8::1", 5062)),
    (" udp:10.0.0.1:65535 ", Address("udp", "10.0.0.1", 65535)),
]


@pytest.mark.parametrize(("text", "expected"), GOOD_SPECS)
def test_parse_listen_spec(text: str, expected: Address) -> None:
    assert parse_listen_spec(text) == expected


BAD_SPECS = [
    ("", "expected transport:host[:port]"),
    ("udp:", "expected transport:host[:port]"),
    ("127.0.0.1:5060", "expected transport:host[:port]"),
    ("tls:127.0.0.1:5061", "unsupported transport 'tls': use udp or tcp"),
    ("udp:localhost:5060", "'localhost' is not an IP address"),
    ("udp:::1:5060", "put an IPv6 address in brackets, e.g. udp:[::1]:5060"),
    ("udp:[::1:5060", "missing ']'"),
    ("udp:[::1]5060", "unexpected '5060' after [::1]"),
    ("udp:[127.0.0.1]:5060", "[127.0.0.1] is not an IPv6 address"),
    ("udp:[fe80::zz]:5060", "is not an IPv6 address"),
    ("udp:127.0.0.1:abc", "port 'abc' is not a number"),
    ("udp:127.0.0.1:", "port '' is not a number"),
    ("udp:127.0.0.1:-1", "port '-1' is not a number"),
    ("udp:127.0.0.1:70000", "port 70000 is out of range 0-65535"),
    ("udp:999.0.0.1:5060", "'999.0.0.1' is not an IP address"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SPECS)
def test_parse_listen_spec_says_what_to_fix(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        parse_listen_spec(text)
    assert "\n" not in str(info.value)


# --- TransportLimits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "field", ["max_message_size", "tcp_max_connections", "tcp_idle_timeout", "udp_buffer_bytes"]
)
def test_limits_must_be_positive(field: str) -> None:
    zero: dict[str, Any] = {field: 0}
    with pytest.raises(ValueError, match=f"{field} must be positive"):
        TransportLimits(**zero)


# --- response_destination ----------------------------------------------------------------

UDP_SOURCE = Address("udp", "192.0.2.9", 40000)
TCP_SOURCE = Address("tcp", "192.0.2.9", 40000)
V6_SOURCE = Address("udp", "2001:db8::9", 40000)
B = "branch=z9hG4bKnashds8"

# (top Via of the request, where it came from, where its response goes): by default, back
# to the source, whatever the client wrote in its Via (Kamailio's reply_to_via=0).
RESPONSE_DESTINATIONS = [
    # RFC 3261 §18.2.2: the sent-by port, or the default port, on the source IP.
    (f"SIP/2.0/UDP 192.0.2.9:5070;{B}", UDP_SOURCE, Address("udp", "192.0.2.9", 5070)),
    (f"SIP/2.0/UDP 192.0.2.9;{B}", UDP_SOURCE, Address("udp", "192.0.2.9", 5060)),
    (f"SIP/2.0/UDP pc33.example.com:5070;{B}", UDP_SOURCE, Address("udp", "192.0.2.9", 5070)),
    # A received= the client wrote is not obeyed: this used to send the response to
    # 192.0.2.77, a third party (§18.2.1 has the *server* add received).
    (
        f"SIP/2.0/UDP pc33.example.com:5070;{B};received=192.0.2.77",
        UDP_SOURCE,
        Address("udp", "192.0.2.9", 5070),
    ),
    # RFC 3581 §4: rport: the source port, whatever value the client gave it (this used to
    # obey received and the rport value).
    (f"SIP/2.0/UDP 10.0.0.1:5070;{B};rport", UDP_SOURCE, Address("udp", "192.0.2.9", 40000)),
    (f"SIP/2.0/UDP 10.0.0.1;rport;{B}", UDP_SOURCE, Address("udp", "192.0.2.9", 40000)),
    (
        f"SIP/2.0/UDP 10.0.0.1:5070;{B};received=192.0.2.77;rport=41234",
        UDP_SOURCE,
        Address("udp", "192.0.2.9", 40000),
    ),
    # maddr is ignored (it used to win over everything): only with reply_to_via.
    (
        f"SIP/2.0/UDP 192.0.2.9:5070;{B};maddr=239.255.255.1;ttl=16",
        UDP_SOURCE,
        Address("udp", "192.0.2.9", 5070),
    ),
    (
        f"SIP/2.0/UDP 192.0.2.9;{B};maddr=192.0.2.200;received=192.0.2.77;rport",
        UDP_SOURCE,
        Address("udp", "192.0.2.9", 40000),
    ),
    # §18.2.2 reliable: the connection (the caller's), else the source IP and the sent-by
    # port or the transport's default port; rport is for unreliable transports only.
    (f"SIP/2.0/TCP 192.0.2.9:5070;{B}", TCP_SOURCE, Address("tcp", "192.0.2.9", 5070)),
    (f"SIP/2.0/TCP pc33.example.com;{B}", TCP_SOURCE, Address("tcp", "192.0.2.9", 5060)),
    (f"SIP/2.0/TCP 10.0.0.1:5070;{B};rport", TCP_SOURCE, Address("tcp", "192.0.2.9", 5070)),
    (
        f"SIP/2.0/TCP 10.0.0.1;{B};received=192.0.2.77",
        TCP_SOURCE,
        Address("tcp", "192.0.2.9", 5060),
    ),
    # The transport and family the request came on, whatever the Via names: a Via naming
    # TLS, SCTP or WS, or an IPv6 host, used to give a destination nothing could send to.
    (f"SIP/2.0/TLS pc33.example.com;{B}", TCP_SOURCE, Address("tcp", "192.0.2.9", 5061)),
    (f"SIP/2.0/TLS 192.0.2.9:5071;{B}", UDP_SOURCE, Address("udp", "192.0.2.9", 5071)),
    (f"SIP/2.0/SCTP 192.0.2.9;{B};rport", UDP_SOURCE, Address("udp", "192.0.2.9", 40000)),
    (f"SIP/2.0/WS 192.0.2.9:8080;{B}", UDP_SOURCE, Address("udp", "192.0.2.9", 8080)),
    (
        f"SIP/2.0/UDP [2001:db8::9]:5070;{B};received=2001:db8::77",
        UDP_SOURCE,
        Address("udp", "192.0.2.9", 5070),
    ),
    # IPv6 sources: hosts without brackets, in canonical form.
    (
        f"SIP/2.0/UDP [2001:db8::9]:5070;{B};rport",
        V6_SOURCE,
        Address("udp", "2001:db8::9", 40000),
    ),
    (f"SIP/2.0/UDP [2001:db8::9];{B}", V6_SOURCE, Address("udp", "2001:db8::9", 5060)),
]


@pytest.mark.parametrize(("via", "source", "expected"), RESPONSE_DESTINATIONS)
def test_response_destination(via: str, source: Address, expected: Address) -> None:
    top_via = parse_message(request(via=via)).top_via
    assert response_destination(top_via, source) == expected


# With reply_to_via (triosip run --reply-to-via): the Via as RFC 3261 §18.2.2 and RFC 3581
# read it, for addresses of the source's family, in the source's transport.
REPLY_TO_VIA_DESTINATIONS = [
    (f"SIP/2.0/UDP 192.0.2.9:5070;{B}", UDP_SOURCE, Address("udp", "192.0.2.9", 5070)),
    # received: its address, the sent-by port, or 5060.
    (
        f"SIP/2.0/UDP pc33.example.com:5070;{B};received=192.0.2.77",
        UDP_SOURCE,
        Address("udp", "192.0.2.77", 5070),
    ),
    (
        f"SIP/2.0/UDP pc33.example.com;{B};received=192.0.2.77",
        UDP_SOURCE,
        Address("udp", "192.0.2.77", 5060),
    ),
    # rport: its value (filled in by a proxy on the way), else the source port.
    (
        f"SIP/2.0/UDP 10.0.0.1:5070;{B};received=192.0.2.77;rport=41234",
        UDP_SOURCE,
        Address("udp", "192.0.2.77", 41234),
    ),
    (f"SIP/2.0/UDP 10.0.0.1:5070;{B};rport", UDP_SOURCE, Address("udp", "192.0.2.9", 40000)),
    (f"SIP/2.0/UDP 10.0.0.1:5070;{B};rport=0", UDP_SOURCE, Address("udp", "192.0.2.9", 40000)),
    # maddr: with the sent-by port or 5060; it wins over received and rport.
    (
        f"SIP/2.0/UDP 192.0.2.9:5070;{B};maddr=239.255.255.1;ttl=16",
        UDP_SOURCE,
        Address("udp", "239.255.255.1", 5070),
    ),
    (
        f"SIP/2.0/UDP 192.0.2.9;{B};maddr=192.0.2.200;received=192.0.2.77;rport",
        UDP_SOURCE,
        Address("udp", "192.0.2.200", 5060),
    ),
    # A maddr that is a name would need DNS (RFC 3263): ignored.
    (
        f"SIP/2.0/UDP 192.0.2.9:5070;{B};maddr=sip.example.com;rport",
        UDP_SOURCE,
        Address("udp", "192.0.2.9", 40000),
    ),
    # An address of the other family: ignored (it could not be reached from here).
    (
        f"SIP/2.0/UDP 192.0.2.9:5070;{B};received=2001:db8::77",
        UDP_SOURCE,
        Address("udp", "192.0.2.9", 5070),
    ),
    (
        f"SIP/2.0/UDP [2001:db8::9]:5070;{B};received=2001:DB8:0::77",
        V6_SOURCE,
        Address("udp", "2001:db8::77", 5070),
    ),
    (
        f"SIP/2.0/UDP [2001:db8::9]:5070;{B};received=[2001:db8::77]",
        V6_SOURCE,
        Address("udp", "2001:db8::77", 5070),
    ),
    # Reliable: received and the sent-by port, never rport.
    (
        f"SIP/2.0/TCP 10.0.0.1:5070;{B};received=192.0.2.77;rport=41234",
        TCP_SOURCE,
        Address("tcp", "192.0.2.77", 5070),
    ),
    (f"SIP/2.0/TLS 192.0.2.9;{B}", UDP_SOURCE, Address("udp", "192.0.2.9", 5061)),
]


@pytest.mark.parametrize(("via", "source", "expected"), REPLY_TO_VIA_DESTINATIONS)
def test_response_destination_with_reply_to_via(
    via: str, source: Address, expected: Address
) -> None:
    top_via = parse_message(request(via=via)).top_via
    assert response_destination(top_via, source, reply_to_via=True) == expected
