"""StreamParser: framing by Content-Length over TCP (RFC 3261 §18.3), keep-alives (RFC 5626)."""

from __future__ import annotations

import pytest

from tests.support.messages import MULTIPART_BODY, VALID, request, response
from triosip.sip import ParseError, Request, StreamParser


def drain(parser: StreamParser) -> list[bytes]:
    out: list[bytes] = []
    while (message := parser.next_message()) is not None:
        out.append(bytes(message))
    return out


def test_messages_one_after_another() -> None:
    first = request(body=b"v=0\r\n")
    second = response()
    third = request("BYE", body=MULTIPART_BODY)
    parser = StreamParser()
    parser.feed(first + second + third)
    assert drain(parser) == [first, second, third]
    assert parser.buffered == 0


def test_every_split_point_gives_the_same_messages() -> None:
    stream = request(body=b"\r\n\r\nbody with blank lines\r\n\r\n") + b"\r\n\r\n" + response()
    for cut in range(len(stream) + 1):
        parser = StreamParser()
        parser.feed(stream[:cut])
        got = drain(parser)
        parser.feed(stream[cut:])
        got += drain(parser)
        assert got == [
            request(body=b"\r\n\r\nbody with blank lines\r\n\r\n"),
            response(),
        ], cut


def test_one_byte_at_a_time() -> None:
    stream = VALID["bench invite"] * 2
    parser = StreamParser()
    got: list[bytes] = []
    for byte in stream:
        parser.feed(bytes((byte,)))
        got += drain(parser)
    assert got == [VALID["bench invite"]] * 2


def test_incomplete_message_waits() -> None:
    data = request(body=b"0123456789")
    parser = StreamParser()
    parser.feed(data[:-1])
    assert parser.next_message() is None
    assert parser.buffered == len(data) - 1
    parser.feed(data[-1:])
    message = parser.next_message()
    assert isinstance(message, Request)
    assert message.body == b"0123456789"


def test_keepalives_and_pings() -> None:
    # RFC 5626 §4.4.1: CRLFCRLF is a ping (answer with CRLF); a lone CRLF is a pong.
    parser = StreamParser()
    parser.feed(b"\r\n\r\n")
    assert parser.next_message() is None
    assert (parser.take_pings(), parser.keepalives) == (1, 1)
    assert parser.take_pings() == 0
    parser.feed(b"\r\n\r")
    assert parser.next_message() is None
    parser.feed(b"\n\r\n\r\n")  # the ping split across reads, then a second ping
    assert parser.next_message() is None
    assert parser.take_pings() == 2
    parser.feed(b"\r\n" + request())  # a pong, then a message
    assert isinstance(parser.next_message(), Request)
    assert parser.keepalives == 4
    assert parser.take_pings() == 0
    assert parser.buffered == 0


def test_a_malformed_but_framed_message_is_skipped() -> None:
    bad = request(cseq="1 OPTIONS")
    good = request("BYE")
    parser = StreamParser()
    parser.feed(bad + good)
    with pytest.raises(ParseError) as caught:
        parser.next_message()
    assert caught.value.fatal is False
    assert "CSeq method" in caught.value.reason
    assert caught.value.is_request is True
    assert [h.name for h in caught.value.answer] == ["via", "to", "from", "call-id", "cseq"]
    assert drain(parser) == [good]


FATAL = [
    pytest.param(request(length=None), 400, "Missing Content-Length", id="missing"),
    pytest.param(request(length="abc"), 400, "Bad Content-Length", id="non-numeric"),
    pytest.param(request(length="-1"), 400, "Bad Content-Length", id="negative"),
    pytest.param(request("INVITE", "sip:b@h", "l: 0"), 400, "Several Content-Length", id="doubled"),
    pytest.param(request(body=b"x" * 70000), 413, "too large", id="oversized-body"),
    pytest.param(request("INVITE", "sip:b@h", "X: " + "y" * 70000), 413, "too large", id="head"),
]


@pytest.mark.parametrize(("data", "status", "reason"), FATAL)
def test_lost_framing_is_fatal_and_stays_so(data: bytes, status: int, reason: str) -> None:
    parser = StreamParser()
    parser.feed(data + request("BYE"))
    with pytest.raises(ParseError) as caught:
        parser.next_message()
    error = caught.value
    assert (error.status, error.fatal) == (status, True)
    assert reason in error.reason
    with pytest.raises(ParseError) as again:
        parser.next_message()
    assert again.value is error


def test_fatal_error_still_says_how_to_answer() -> None:
    parser = StreamParser()
    parser.feed(request(length=None))
    with pytest.raises(ParseError) as caught:
        parser.next_message()
    assert caught.value.is_request is True
    assert caught.value.method == "INVITE"
    assert len(caught.value.answer) == 5


def test_garbage_without_a_blank_line_is_fatal_once_over_the_limit() -> None:
    parser = StreamParser(max_size=1000)
    parser.feed(bytes(range(256)) * 3)
    assert parser.next_message() is None
    parser.feed(bytes(range(256)))
    with pytest.raises(ParseError) as caught:
        parser.next_message()
    assert (caught.value.status, caught.value.fatal, caught.value.answer) == (413, True, ())
