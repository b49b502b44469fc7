"""Property tests: the parser either parses or raises ParseError, whatever it is fed.

The inputs are random bytes and, to reach the parser's deep paths, valid messages with
a few mutations each (bytes flipped, special characters inserted, lines dropped,
duplicated or swapped). Whatever parses must round-trip byte for byte, must read the
same on the fast and the careful path, and must let every lazy accessor be touched
with nothing but ParseError coming out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypothesis import example, given
from hypothesis import strategies as st

from tests.support.messages import FUZZ, FUZZ_SMALL, SPECIAL, VALID, message
from triosip.sip import (
    URI,
    LocalSIPError,
    NameAddr,
    ParseError,
    Request,
    Response,
    StreamParser,
    Via,
    _parser,
    build_error_response,
    build_response,
    parse_message,
)

if TYPE_CHECKING:
    from collections.abc import Callable

SEEDS = [data for data in VALID.values() if len(data) < 1500]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with one to four mutations."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "lines"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and data:
            at = min(at, len(data) - 1)
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(SPECIAL))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[at:]
        else:
            head, sep, body = bytes(data).partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            if len(lines) > 2:
                i = draw(st.integers(1, len(lines) - 1))
                j = draw(st.integers(1, len(lines) - 1))
                op = draw(st.sampled_from(["drop", "dup", "swap"]))
                if op == "drop":
                    del lines[i]
                elif op == "dup":
                    lines.insert(j, lines[i])
                else:
                    lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\r\n".join(lines) + sep + body)
    return bytes(data)


INPUTS = st.one_of(mutated(), st.binary(max_size=600))


def parse_or_error(parse: Callable[[], Request | Response]) -> Request | Response | ParseError:
    try:
        return parse()
    except ParseError as error:
        return error


def leading_crlfs(data: bytes) -> int:
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    return start


def touch_everything(m: Request | Response) -> None:
    """Read every lazily parsed value; ParseError is the only allowed exception."""

    def read(getter: Callable[[], Any]) -> Any:
        try:
            return getter()
        except ParseError:
            return None

    def read_uri(uri: URI) -> None:
        _ = (uri.scheme, uri.user, uri.password, uri.host, uri.port, dict(uri.params))
        _ = (dict(uri.headers), uri.host_port, uri.transport, uri.opaque, str(uri))

    def read_address(addr: NameAddr) -> None:
        _ = (addr.display_name, dict(addr.params), addr.tag, addr.uri_text, str(addr))
        uri = read(lambda: addr.uri)
        if uri is not None:
            read_uri(uri)

    def read_via(via: Via) -> None:
        _ = (via.protocol, via.transport, via.host, via.port, via.sent_by, dict(via.params))
        _ = (via.branch, via.received, via.rport, via.has_rport, via.maddr, via.ttl, str(via))

    read_via(m.top_via)
    for via in read(lambda: m.via) or ():
        read_via(via)
    read_address(m.from_)
    read_address(m.to)
    for getter in (lambda: m.route, lambda: m.record_route, lambda: m.contact):
        for addr in read(getter) or ():
            read_address(addr)
    _ = (m.call_id, m.cseq.number, m.cseq.method, m.content_length, read(lambda: m.contact_star))
    read(lambda: m.max_forwards)
    for header in m.headers:
        _ = (header.name, header.value, header.raw)
        _ = (m.header(header.name), m.header_lines(header.name), m.header_values(header.name))
    if isinstance(m, Request):
        uri = read(lambda: m.uri)
        if uri is not None:
            read_uri(uri)
    _ = repr(m), hash(m), m == m


def fields_of(m: Request | Response) -> tuple[object, ...]:
    start = (m.method, m.uri_raw) if isinstance(m, Request) else (m.status, m.reason)
    return (
        type(m),
        start,
        m.version,
        m.lines,
        m.body,
        m.top_via,
        m.from_,
        m.to,
        m.call_id,
        m.cseq,
        m.max_forwards if isinstance(m, Request) else None,
        m.content_length,
        m._names(),
    )


@FUZZ
@given(INPUTS)
@example(VALID["bench invite"])
def test_any_bytes_parse_or_raise_parse_error(data: bytes) -> None:
    m = parse_or_error(lambda: parse_message(data))
    if isinstance(m, ParseError):
        assert m.status in (400, 413, 505)
        assert m.reason
        assert "\r" not in m.reason
        assert "\n" not in m.reason
        answer = build_error_response(m, to_tag="fuzz")
        if answer is not None:
            # The answer to a bad request is itself a valid response.
            response = parse_message(answer)
            assert isinstance(response, Response)
            assert response.status == m.status
        return
    # It parsed: unmodified, it serializes to the bytes it came from (up to its body).
    start = leading_crlfs(data)
    wire = bytes(m)
    assert data[start:].startswith(wire)
    assert wire.endswith(m.body)
    assert len(m.body) == m.content_length
    touch_everything(m)


@FUZZ
@given(mutated())
def test_fast_and_careful_paths_agree(data: bytes) -> None:
    start = leading_crlfs(data)
    end = data.find(b"\r\n\r\n", start)
    fast = parse_or_error(lambda: parse_message(data))
    if end < 0:
        assert isinstance(fast, ParseError)
        return
    head = data[start:end].decode("utf-8", "surrogateescape")
    careful = parse_or_error(lambda: _parser._parse_carefully(data, start, end, head, stream=False))
    if isinstance(fast, ParseError):
        # The fast path hands every failure to the careful one: this is its error.
        assert isinstance(careful, ParseError)
        assert careful.reason == fast.reason
        return
    assert not isinstance(careful, ParseError)
    assert fields_of(careful) == fields_of(fast)
    assert bytes(careful) == bytes(fast)


def outcomes(stream: bytes, cut: int | None) -> list[object]:
    """What a StreamParser gives for `stream`, fed whole or in two pieces at `cut`."""
    parser = StreamParser(max_size=4000)
    pieces = [stream] if cut is None else [stream[:cut], stream[cut:]]
    out: list[object] = []
    for piece in pieces:
        parser.feed(piece)
        while True:
            try:
                m = parser.next_message()
            except ParseError as error:
                out.append(("error", error.status, error.reason, error.fatal))
                if error.fatal:
                    return out
                continue
            if m is None:
                break
            out.append(bytes(m))
    return out


@FUZZ_SMALL
@given(st.lists(INPUTS, min_size=1, max_size=2), st.data())
def test_stream_parser_splits_anywhere_the_same_way(
    pieces: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(pieces)
    whole = outcomes(stream, None)
    for cut in range(len(stream) + 1):
        assert outcomes(stream, cut) == whole, cut
    # Whatever came out parses and round-trips on its own.
    for item in whole:
        if isinstance(item, bytes):
            assert bytes(parse_message(item)) == item


NAMES = st.sampled_from(["via", "v", "Record-Route", "route", "Max-Forwards", "X-Custom", "to"])
VALUES = st.sampled_from(
    [
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-e1",
        "<sip:10.0.0.1;lr>",
        "70",
        "plain value",
        '"quoted, with comma" <sip:a@b>',
    ]
)


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(
        st.tuples(
            st.sampled_from(["first", "last", "pop", "remove", "replace", "max_forwards", "uri"]),
            NAMES,
            VALUES,
        ),
        max_size=6,
    ),
)
def test_edits_keep_untouched_lines_and_parse_back(
    data: bytes, edits: list[tuple[str, str, str]]
) -> None:
    m = parse_message(data)
    touched: set[str] = set()
    for kind, name, value in edits:
        canonical = {"v": "via"}.get(name.lower(), name.lower())
        touched.add(canonical)
        if kind == "first":
            m = m.with_header_first(name, value)
        elif kind == "last":
            m = m.with_header_last(name, value)
        elif kind == "pop":
            m = m.without_first_value(name)
        elif kind == "remove":
            m = m.without_header(name)
        elif kind == "replace":
            m = m.with_header_replaced(name, value)
        elif kind == "max_forwards":
            m = m.with_max_forwards(len(value))
        elif isinstance(m, Request):
            m = m.with_uri("sip:edited@example.com")
        touched.add("max-forwards")
    original = parse_message(data)
    kept = [
        line
        for line, name in zip(original.lines, original._names(), strict=True)
        if name not in touched
    ]
    assert [line for line in m.lines if line in kept] == kept
    assert m.body == original.body
    wire = bytes(m)
    assert wire.endswith(m.body)
    try:
        again = parse_message(wire)
    except ParseError:
        return  # e.g. the edits removed the only Via: the bytes say so, no other error
    assert again.lines == m.lines


@FUZZ
@given(mutated())
def test_responses_to_whatever_parsed(data: bytes) -> None:
    try:
        m = parse_message(data)
    except ParseError:
        return
    if not isinstance(m, Request):
        return
    try:
        response = build_response(m, 200, to_tag="r1", headers=[("Contact", "<sip:a@b>")])
    except ParseError:
        return  # a field build_response copies was malformed and read lazily
    except LocalSIPError:
        raise
    again = parse_message(bytes(response))
    assert again.call_id == m.call_id
    assert again.cseq == m.cseq
    assert again.header_lines("via") == m.header_lines("via")
    assert again.to.tag == (m.to.tag or "r1")


@FUZZ
@given(
    st.lists(
        st.text(
            alphabet=st.characters(
                codec="utf-8", exclude_characters="\r\n\x00", exclude_categories=["Cs"]
            ),
            max_size=40,
        ),
        max_size=5,
    ),
    st.binary(max_size=200),
    st.booleans(),
)
def test_generated_valid_messages_round_trip(values: list[str], body: bytes, fold: bool) -> None:
    # Any header-value text is accepted in extension headers, folded or not.
    extra = []
    for n, value in enumerate(values):
        line = f"X-Generated-{n}: {value}"
        if fold:
            line = f"X-Generated-{n}:\r\n  {value}"
        extra.append(line)
    data = message(
        "OPTIONS sip:generated@example.com SIP/2.0",
        "Via: SIP/2.0/TCP gen.example.com;branch=z9hG4bK-gen",
        "From: <sip:a@example.com>;tag=g1",
        "To: <sip:b@example.com>",
        "Call-ID: generated",
        "CSeq: 1 OPTIONS",
        *extra,
        body=body,
    )
    m = parse_message(data)
    assert bytes(m) == data
    for n, value in enumerate(values):
        assert m.header(f"x-generated-{n}") == value.strip(" \t")
