"""The forwarding rules of `triosip.proxy._forward` (RFC 3261 §16.3-§16.6), with messages
alone: no socket, no trio. Each table row is a request as bytes and what the rule makes
of it.
"""

from __future__ import annotations

import pytest

from triosip.proxy import NextHop, RoutingError, parse_destination
from triosip.proxy._forward import (
    BRANCH_PREFIX,
    DEFAULT_MAX_FORWARDS,
    _is_ip_literal,
    _parse_destination,
    forward_request,
    has_looped,
    is_ip_literal,
    loop_hash,
    prepare_forward,
    record_route_value,
    stamp_received,
    stamped_source,
    strip_own_routes,
    target_of,
    via_value,
)
from triosip.sip import LocalSIPError, Request, parse_message
from triosip.transport import Address

OURS = {("127.0.0.1", 5060), ("::1", 5070)}
PROXY = Address("udp", "127.0.0.1", 5060)
NEXT_HOP_VIA = "SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-next-hop"


def request(
    *extra: str,
    method: str = "INVITE",
    uri: str = "sip:bob@10.0.0.2:5080",
    via: str = "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-uac-1",
    max_forwards: int | None = 70,
    call_id: str = "call-1@10.0.0.1",
    cseq: int = 1,
    to_tag: str | None = None,
) -> Request:
    """A request as a UAC sends it; `extra` header lines go after the mandatory ones."""
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via}",
        *([] if max_forwards is None else [f"Max-Forwards: {max_forwards}"]),
        "From: Alice <sip:alice@example.com>;tag=from-1",
        "To: Bob <sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        *extra,
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def forwarded_by_us(received: Request, *, via: Address = PROXY) -> Request:
    """`received` as this proxy sends it on: the branch carries the loop hash (§16.6 step 8)."""
    branch = f"{BRANCH_PREFIX}{loop_hash(received, received.top_via)}.0123456789ab"
    return prepare_forward(received).with_header_first("via", via_value(via, branch))


# -- loops and spirals (§16.3 step 4) -----------------------------------------------------


def test_loop_hash_is_stable_and_short() -> None:
    received = request()
    digest = loop_hash(received, received.top_via)
    assert digest == loop_hash(request(), request().top_via)
    assert len(digest) == 10
    assert int(digest, 16) >= 0  # hex: it must fit in a branch token


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(request(uri="sip:carol@10.0.0.2:5080"), id="request-uri"),
        pytest.param(request(call_id="call-2@10.0.0.1"), id="call-id"),
        pytest.param(request(cseq=2), id="cseq"),
        pytest.param(request(to_tag="to-1"), id="to-tag"),
        pytest.param(request("Route: <sip:10.0.0.9;lr>"), id="route"),
        pytest.param(request("Proxy-Require: foo"), id="proxy-require"),
        pytest.param(request(via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-uac-2"), id="via"),
    ],
)
def test_loop_hash_covers_what_identifies_the_request(changed: Request) -> None:
    received = request()
    assert loop_hash(changed, changed.top_via) != loop_hash(received, received.top_via)


def test_loop_hash_ignores_max_forwards() -> None:
    # Max-Forwards changes at each hop, loop or not: it must not be part of the hash.
    assert loop_hash(request(max_forwards=10), request().top_via) == loop_hash(
        request(), request().top_via
    )


def test_request_that_comes_back_unchanged_has_looped() -> None:
    # We forwarded it; the next hop sent it back to us, unchanged but for its own Via.
    sent = forwarded_by_us(request())
    back = sent.with_header_first("via", NEXT_HOP_VIA)
    assert has_looped(back, OURS)
    # Also straight back, with no other Via on top.
    assert has_looped(sent, OURS)


def test_request_that_comes_back_with_another_request_uri_has_spiralled() -> None:
    # RFC 3261 §16.3 step 4: a spiral (retargeted by the next hop) is not a loop.
    back = forwarded_by_us(request()).with_header_first("via", NEXT_HOP_VIA)
    assert not has_looped(back.with_uri("sip:bob@10.0.0.3"), OURS)


def test_request_that_comes_back_with_a_new_route_has_spiralled() -> None:
    back = forwarded_by_us(request()).with_header_first("via", NEXT_HOP_VIA)
    assert not has_looped(back.with_header_last("route", "<sip:10.0.0.9;lr>"), OURS)


def test_our_branch_on_someone_else_s_via_is_no_loop() -> None:
    # Same hash, but the Via names a host and port that is not one of our listeners.
    elsewhere = forwarded_by_us(request(), via=Address("udp", "10.0.0.5", 5060))
    assert not has_looped(elsewhere, OURS)


def test_our_via_with_a_foreign_branch_is_no_loop() -> None:
    received = request()
    sent = prepare_forward(received).with_header_first(
        "via", via_value(PROXY, "z9hG4bK-not-ours-" + loop_hash(received, received.top_via))
    )
    assert not has_looped(sent, OURS)


def test_a_fresh_request_has_not_looped() -> None:
    assert not has_looped(request(), OURS)
    assert not has_looped(request(via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-x"), OURS)


def test_loop_through_an_ipv6_listener() -> None:
    sent = forwarded_by_us(request(), via=Address("udp", "::1", 5070))
    assert has_looped(sent.with_header_first("via", NEXT_HOP_VIA), OURS)


# -- Route entries naming us (§16.4) ------------------------------------------------------


@pytest.mark.parametrize(
    ("routes", "left"),
    [
        pytest.param(["<sip:127.0.0.1;lr>"], [], id="ours-default-port"),
        pytest.param(["<sip:127.0.0.1:5060;lr>, <sip:10.0.0.9;lr>"], ["10.0.0.9"], id="one-line"),
        pytest.param(
            ["<sip:127.0.0.1:5060;lr>", "<sip:10.0.0.9;lr>"], ["10.0.0.9"], id="two-lines"
        ),
        pytest.param(
            ["<sip:127.0.0.1;lr>", "<sip:[::1]:5070;lr;transport=tcp>", "<sip:10.0.0.9;lr>"],
            ["10.0.0.9"],
            id="double-record-route",
        ),
        pytest.param(
            ["<sip:10.0.0.9;lr>", "<sip:127.0.0.1;lr>"], ["10.0.0.9", "127.0.0.1"], id="not-top"
        ),
        pytest.param(["<sip:127.0.0.1:5061;lr>"], ["127.0.0.1"], id="another-port"),
        pytest.param(["<sip:proxy.example.com;lr>"], ["proxy.example.com"], id="a-name"),
    ],
)
def test_strip_own_routes(routes: list[str], left: list[str]) -> None:
    stripped, routed = strip_own_routes(request(*(f"Route: {r}" for r in routes)), OURS)
    assert routed
    assert [entry.uri.host.strip("[]") for entry in stripped.route] == left


def test_strip_own_routes_without_route() -> None:
    original = request()
    stripped, routed = strip_own_routes(original, OURS)
    assert not routed
    assert stripped is original


def test_strip_own_routes_leaves_the_rest_untouched() -> None:
    original = request("Route: <sip:127.0.0.1;lr>", "Route: <sip:10.0.0.9;lr>")
    stripped, _ = strip_own_routes(original, OURS)
    assert bytes(stripped) == bytes(original).replace(b"Route: <sip:127.0.0.1;lr>\r\n", b"")


# -- the request sent on (§16.6 steps 1-6) ------------------------------------------------


@pytest.mark.parametrize(
    ("received", "sent"),
    [(70, 69), (1, 0), (255, 254), (None, DEFAULT_MAX_FORWARDS)],
)
def test_prepare_forward_max_forwards(received: int | None, sent: int) -> None:
    # §16.6 step 3: decremented, or 70 added when absent.
    forwarded = prepare_forward(request(max_forwards=received))
    assert forwarded.max_forwards == sent
    assert forwarded.header_lines("max-forwards") == [str(sent)]


def test_prepare_forward_adds_record_route_on_top() -> None:
    # §16.6 step 4: ours go before those already there, in the order given.
    original = request("Record-Route: <sip:10.0.0.9;lr>")
    forwarded = prepare_forward(
        original, record_route=("<sip:127.0.0.1:5060;lr>", "<sip:127.0.0.1:5061;lr>")
    )
    assert forwarded.header_lines("record-route") == [
        "<sip:127.0.0.1:5060;lr>",
        "<sip:127.0.0.1:5061;lr>",
        "<sip:10.0.0.9;lr>",
    ]


def test_prepare_forward_without_record_route_adds_none() -> None:
    assert prepare_forward(request()).header_lines("record-route") == []


def test_prepare_forward_leaves_via_and_request_uri_to_the_caller() -> None:
    original = request("Route: <sip:10.0.0.9;lr>")
    forwarded = prepare_forward(original)
    assert forwarded.header_lines("via") == original.header_lines("via")
    assert forwarded.uri_raw == original.uri_raw
    assert forwarded.header_lines("route") == ["<sip:10.0.0.9;lr>"]


def test_prepare_forward_to_a_strict_router() -> None:
    # §16.6 step 6: the Request-URI goes last in the Route set, the strict router's URI
    # becomes the Request-URI.
    original = request("Route: <sip:10.0.0.9:5090>", "Route: <sip:10.0.0.10;lr>")
    forwarded = prepare_forward(original)
    assert forwarded.uri_raw == "sip:10.0.0.9:5090"
    assert forwarded.header_lines("route") == [
        "<sip:10.0.0.10;lr>",
        "<sip:bob@10.0.0.2:5080>",
    ]
    # §16.6 step 7: it goes to the strict router. This used to go to the Request-URI's host
    # (target_of skipped a Route without lr, expecting prepare_forward to have run first).
    assert target_of(original, None) == NextHop("udp", "10.0.0.9", 5090)


def test_via_and_record_route_values() -> None:
    assert via_value(PROXY, "z9hG4bK-ts1") == "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ts1"
    assert via_value(Address("tcp", "::1", 5070), "b") == "SIP/2.0/TCP [::1]:5070;branch=b"
    assert record_route_value(PROXY) == "<sip:127.0.0.1:5060;lr>"
    assert record_route_value(Address("tcp", "::1", 5070)) == "<sip:[::1]:5070;transport=tcp;lr>"


@pytest.mark.parametrize(
    ("via", "source", "params"),
    [
        pytest.param("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1", "10.0.0.1", {}, id="same"),
        pytest.param(
            "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1",
            "10.0.0.3",
            {"received": "10.0.0.3"},
            id="received",
        ),
        pytest.param(
            "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport",
            "10.0.0.1",
            {"received": "10.0.0.1", "rport": "4444"},
            id="rport",
        ),
        pytest.param(
            "SIP/2.0/UDP host.example.com;branch=z9hG4bK1",
            "10.0.0.1",
            {"received": "10.0.0.1"},
            id="name",
        ),
        # The client's own received= and rport= values are replaced by the source: they
        # used to be passed on as they came, so that a stateless hop (or our own stray 2xx
        # relaying) would send responses where the client said.
        pytest.param(
            "SIP/2.0/UDP 10.0.0.1:5070;received=192.0.2.66;branch=z9hG4bK1",
            "10.0.0.1",
            {"received": "10.0.0.1"},
            id="client-received-same-host",
        ),
        pytest.param(
            "SIP/2.0/UDP 10.0.0.1:5070;received=192.0.2.66;branch=z9hG4bK1",
            "10.0.0.3",
            {"received": "10.0.0.3"},
            id="client-received-other-host",
        ),
        pytest.param(
            "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport=9999;received=192.0.2.66",
            "10.0.0.1",
            {"received": "10.0.0.1", "rport": "4444"},
            id="client-rport-value",
        ),
        pytest.param(
            "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport=4444;received=10.0.0.1",
            "10.0.0.1",
            {"received": "10.0.0.1", "rport": "4444"},
            id="already-right",
        ),
    ],
)
def test_stamp_received(via: str, source: str, params: dict[str, str]) -> None:
    # RFC 3261 §18.2.1 and RFC 3581 §4.
    stamped = stamp_received(request(via=via), Address("udp", source, 4444))
    top = stamped.top_via
    assert (top.received, top.rport) == (params.get("received"), params.get("rport"))
    assert top.branch == "z9hG4bK1"
    assert len(stamped.via) == 1


@pytest.mark.parametrize(
    ("via", "expected"),
    [
        ("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1", Address("udp", "10.0.0.1", 5070)),
        ("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1", Address("udp", "10.0.0.1", 5060)),
        (
            "SIP/2.0/UDP host.example.com:5070;branch=z9hG4bK1;received=10.0.0.3",
            Address("udp", "10.0.0.3", 5070),
        ),
        (
            "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport=4444;received=10.0.0.3",
            Address("udp", "10.0.0.3", 4444),
        ),
        ("SIP/2.0/TCP [::1];branch=z9hG4bK1;rport", Address("tcp", "::1", 5060)),
        # maddr is no part of what we stamped: ignored.
        (
            "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;maddr=192.0.2.66",
            Address("udp", "10.0.0.1", 5070),
        ),
        # Neither received nor sent-by is an IP: not stamped by us; only DNS could say.
        ("SIP/2.0/UDP host.example.com;branch=z9hG4bK1", None),
    ],
)
def test_stamped_source(via: str, expected: Address | None) -> None:
    # The inverse of stamp_received: where a stray 2xx is relayed upstream.
    assert stamped_source(request(via=via).top_via) == expected


def test_stamped_source_reads_what_stamp_received_wrote() -> None:
    source = Address("udp", "192.0.2.9", 40000)
    via = "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport;received=198.51.100.1"
    assert stamped_source(stamp_received(request(via=via), source).top_via) == source


# -- where it goes (§16.6 step 7, RFC 3263 §4) --------------------------------------------


@pytest.mark.parametrize(
    ("text", "hop"),
    [
        ("udp:127.0.0.1:5080", NextHop("udp", "127.0.0.1", 5080)),
        ("tcp:127.0.0.1:5080", NextHop("tcp", "127.0.0.1", 5080)),
        ("TCP:127.0.0.1:5080", NextHop("tcp", "127.0.0.1", 5080)),
        ("tcp:[::1]:5080", NextHop("tcp", "::1", 5080)),
        ("[::1]", NextHop("udp", "::1", 5060)),
        ("127.0.0.1:5080", NextHop("udp", "127.0.0.1", 5080)),
        ("127.0.0.1", NextHop("udp", "127.0.0.1", 5060)),
        ("  127.0.0.1:5080  ", NextHop("udp", "127.0.0.1", 5080)),
        ("proxy.example.com", NextHop("udp", "proxy.example.com", 5060)),
        ("Proxy.Example.COM:5070", NextHop("udp", "proxy.example.com", 5070)),
        ("tcp:proxy.example.com", NextHop("tcp", "proxy.example.com", 5060)),
        ("sip:proxy.example.com", NextHop("udp", "proxy.example.com", 5060)),
        ("sip:proxy.example.com:5070;transport=tcp", NextHop("tcp", "proxy.example.com", 5070)),
        ("sip:bob@[::1]:5070", NextHop("udp", "::1", 5070)),
        ("sip:bob@10.0.0.1;maddr=10.0.0.2", NextHop("udp", "10.0.0.2", 5060)),
    ],
)
def test_parse_destination(text: str, hop: NextHop) -> None:
    assert parse_destination(text) == hop


@pytest.mark.parametrize(
    ("text", "status", "says"),
    [
        ("", 400, "no host"),
        (":5060", 400, "no host"),
        ("udp:", 400, "no host"),
        ("udp:127.0.0.1:0", 400, "port '0'"),
        ("udp:127.0.0.1:65536", 400, "port '65536'"),
        ("127.0.0.1:abc", 400, "port 'abc'"),
        ("127.0.0.1:5060:1", 400, "port '5060:1'"),
        ("127.0.0.1:", 400, "port ''"),  # this used to pass as port 5060
        ("[::1]:", 400, "port ''"),
        ("localhost:", 400, "port ''"),
        ("127.0.0.1:\u0665\u0660\u0666\u0660", 400, "port"),  # Arabic-Indic digits
        ("[::1", 400, "unclosed ["),
        ("[::1]x", 400, "[::1]x"),
        ("tls:proxy.example.com:5061", 400, "transport 'tls'"),  # this used to blame the port
        ("tel:+15551234", 400, "transport 'tel'"),
        ("sip:", 400, "Bad SIP URI"),
        ("sips:proxy.example.com", 416, "TLS"),
        ("sip:proxy.example.com;transport=sctp", 503, "sctp"),
    ],
)
def test_parse_destination_refuses(text: str, status: int, says: str) -> None:
    with pytest.raises(RoutingError) as info:
        parse_destination(text)
    assert info.value.status == status
    assert says in info.value.reason
    assert "\n" not in info.value.reason


@pytest.mark.parametrize(
    ("lines", "uri", "destination", "hop"),
    [
        pytest.param(
            (), "sip:bob@10.0.0.2:5080", None, NextHop("udp", "10.0.0.2", 5080), id="ruri"
        ),
        pytest.param(
            (), "sip:bob@10.0.0.2;transport=tcp", None, NextHop("tcp", "10.0.0.2", 5060), id="tcp"
        ),
        pytest.param((), "sip:bob@[::1]:5070", None, NextHop("udp", "::1", 5070), id="ruri-ipv6"),
        pytest.param(
            (),
            "sip:bob@b.example.com;maddr=10.0.0.7",
            None,
            NextHop("udp", "10.0.0.7", 5060),
            id="maddr",
        ),
        pytest.param(
            ("Route: <sip:10.0.0.9:5090;lr;transport=tcp>", "Route: <sip:10.0.0.10;lr>"),
            "sip:bob@10.0.0.2:5080",
            None,
            NextHop("tcp", "10.0.0.9", 5090),
            id="route",
        ),
        pytest.param(
            ("Route: <sip:10.0.0.9;lr>",),
            "sip:bob@10.0.0.2:5080",
            NextHop("tcp", "10.0.0.11", 5099),
            NextHop("tcp", "10.0.0.11", 5099),
            id="explicit-beats-route",
        ),
        pytest.param(
            (),
            "sip:bob@10.0.0.2:5080",
            NextHop("udp", "10.0.0.11", 5099),
            NextHop("udp", "10.0.0.11", 5099),
            id="explicit-beats-ruri",
        ),
    ],
)
def test_target_of(
    lines: tuple[str, ...], uri: str, destination: NextHop | None, hop: NextHop
) -> None:
    assert target_of(request(*lines, uri=uri), destination) == hop


@pytest.mark.parametrize(
    ("uri", "status"),
    [("tel:+15551234", 416), ("sips:bob@10.0.0.2", 416), ("sip:bob@10.0.0.2;transport=ws", 503)],
)
def test_target_of_refuses(uri: str, status: int) -> None:
    with pytest.raises(RoutingError) as info:
        target_of(request(uri=uri), None)
    assert info.value.status == status


@pytest.mark.parametrize(
    ("host", "literal"),
    [
        ("127.0.0.1", True),
        ("[2001:db8::1]", True),
        ("2001:DB8::1", True),
        ("[::ffff:192.0.2.1]", True),
        ("biloxi.example.com", False),
        ("192.0.2.256", False),
        ("", False),
        ("fe80::1%" + "z" * 80, True),  # longer than what is remembered: checked each time
        ("a" * 300, False),
    ],
)
def test_is_ip_literal(host: str, literal: bool) -> None:
    # Twice: the second answer may come from what the first one left behind.
    assert is_ip_literal(host) is literal
    assert is_ip_literal(host) is literal


def test_a_long_host_is_answered_but_not_kept() -> None:
    # A peer's 64 KB "host" must not stay in the cache of answers.
    before = _is_ip_literal.cache_info().currsize
    assert not is_ip_literal("1" * 70_000)
    assert is_ip_literal("fe80::1%" + "z" * 70_000)
    assert _is_ip_literal.cache_info().currsize == before


def test_a_long_destination_is_parsed_but_not_kept() -> None:
    before = _parse_destination.cache_info().currsize
    host = "a" * 300 + ".example.com"
    assert parse_destination(f"udp:{host}:5080").host == host
    assert _parse_destination.cache_info().currsize == before


# -- the edits of a forwarded request in one copy ---------------------------------------

SOURCES = (
    Address("udp", "198.51.100.7", 5062),
    Address("udp", "10.0.0.1", 5070),
    Address("udp", "2001:db8::7", 5062),
    None,
)
OUR_RR = (record_route_value(PROXY), record_route_value(Address("tcp", "10.9.9.9", 5080)))
FORWARDED_VIA = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ts0123456789.abcdef"
RECEIVED = [
    pytest.param(request(), id="plain"),
    pytest.param(request(max_forwards=None), id="no-max-forwards"),
    pytest.param(request("Content-Type: application/sdp"), id="content-type"),
    pytest.param(request(via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport"), id="rport"),
    pytest.param(
        request(via="SIP/2.0/UDP h.example.com;Branch=z9hG4bK1 ; rport;received=192.0.2.1"),
        id="via-params-unusual",
    ),
    pytest.param(
        request(via='SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1;x="a;b";rport'), id="via-quoted"
    ),
    pytest.param(request(via="SIP/2.0/UDP 10.0.0.1;rport;branch=z9hG4bK1;rport=7"), id="via-twice"),
    pytest.param(
        request(via="SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1, SIP/2.0/TCP 10.0.0.2;branch=z9hG4bK2"),
        id="two-vias-on-a-line",
    ),
    pytest.param(request("Via: SIP/2.0/UDP 10.0.0.8;branch=z9hG4bK8"), id="two-via-lines"),
    pytest.param(request("Record-Route: <sip:10.0.0.5;lr>"), id="record-route"),
    pytest.param(request("Route: <sip:10.0.0.5;lr>, <sip:10.0.0.6;lr>"), id="loose-route"),
    pytest.param(request("Route: <sip:10.0.0.5>"), id="strict-route"),
    pytest.param(request("v: SIP/2.0/UDP 10.0.0.8;branch=z9hG4bK8"), id="compact-via"),
]


@pytest.mark.parametrize("received", RECEIVED)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("record_route", [(), OUR_RR[:1], OUR_RR])
@pytest.mark.parametrize("reliable", [False, True])
def test_forward_request_is_the_edits_one_by_one(
    received: Request,
    source: Address | None,
    record_route: tuple[str, ...],
    reliable: bool,
) -> None:
    # The step-by-step edits the proxy made before forward_request: the same message.
    stamped = received if source is None else stamp_received(received, source)
    expected = prepare_forward(stamped, record_route=record_route)
    if reliable:
        expected = expected.with_body(expected.body)
    expected = expected.with_header_first("via", FORWARDED_VIA)
    forwarded = forward_request(
        received, via=FORWARDED_VIA, record_route=record_route, source=source, reliable=reliable
    )
    assert bytes(forwarded) == bytes(expected)
    assert forwarded == expected
    assert forwarded._names() == expected._names()
    # The cache the edit passed on reads as a fresh parse of the same bytes.
    fresh = parse_message(bytes(expected))
    assert isinstance(fresh, Request)
    assert forwarded.max_forwards == fresh.max_forwards
    assert forwarded.content_length == fresh.content_length
    assert forwarded.via == fresh.via
    assert forwarded.record_route == fresh.record_route
    assert forwarded.route == fresh.route
    assert forwarded.uri == fresh.uri


def test_forward_request_refuses_what_the_edits_refused() -> None:
    with pytest.raises(LocalSIPError):
        forward_request(request(max_forwards=0), via=FORWARDED_VIA)
    with pytest.raises(LocalSIPError):
        forward_request(request(), via=FORWARDED_VIA + "\r\nX: injected")


@pytest.mark.parametrize(
    "via",
    [
        "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1",
        "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport",
        "SIP/2.0/UDP 10.0.0.1:5070;rport=9;branch=z9hG4bK1;received=192.0.2.1",
        "SIP/2.0/UDP 10.0.0.1:5070",
        "SIP/2.0/UDP 10.0.0.1:5070;BRANCH=z9hG4bK1;rport",
        "SIP/2.0/UDP 10.0.0.1:5070 ;branch=z9hG4bK1",
        "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1 ;rport",
        "SIP/2.0/UDP 10.0.0.1:5070;rport;rport=5",
        'SIP/2.0/UDP 10.0.0.1:5070;x="a;b";rport',
        "SIP/2.0/UDP [2001:db8::1]:5070;received=2001:db8::2;maddr=[::1];ttl=3;lr",
    ],
)
@pytest.mark.parametrize(
    "params",
    [
        {"received": "198.51.100.7"},
        {"received": "198.51.100.7", "rport": "5062"},
        {"rport": "5062"},
        {"received": "2001:db8::7", "rport": "5062"},
        {"rport": None},
        {"received": "999.1.1.1"},
    ],
)
def test_via_params_text_is_with_params_spliced(via: str, params: dict[str, str | None]) -> None:
    top = request(via=via).top_via
    assert top.with_params_text(**params) == str(top.with_params(**params))


def test_via_params_text_refuses_what_with_params_refuses() -> None:
    top = request().top_via
    with pytest.raises(LocalSIPError):
        top.with_params(rport="99999")
    with pytest.raises(LocalSIPError):
        top.with_params_text(rport="99999")
