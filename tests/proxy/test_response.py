"""Choosing the response to send upstream (RFC 3261 §16.7 step 6), with responses alone."""

from __future__ import annotations

import pytest

from triosip.proxy._response import best_response, forwarded_status, merge_challenges
from triosip.sip import Request, Response, build_response, parse_message


def _invite() -> Request:
    message = parse_message(
        b"INVITE sip:bob@10.0.0.2 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ts0123456789.abc\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-uac\r\n"
        b"Max-Forwards: 69\r\n"
        b"From: <sip:alice@example.com>;tag=a\r\n"
        b"To: <sip:bob@example.com>\r\n"
        b"Call-ID: best-1\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(message, Request)
    return message


INVITE = _invite()


def answers(*statuses: int) -> list[Response]:
    """One response per branch, in branch order; each To tag names its branch."""
    return [
        build_response(INVITE, status, to_tag=f"branch{index}")
        for index, status in enumerate(statuses)
    ]


def chosen(*statuses: int) -> tuple[int, str | None]:
    best = best_response(answers(*statuses))
    return best.status, best.to.tag


@pytest.mark.parametrize(
    ("statuses", "status"),
    [
        # A 6xx wins over everything (§16.7 step 6: "MUST choose from the 6xx class").
        ((486, 603, 500), 603),
        ((200, 600), 600),
        ((302, 404, 503, 606), 606),
        # Otherwise the lowest class.
        ((500, 486), 486),
        ((503, 302), 302),
        ((404, 302, 200), 200),
        ((408, 504), 408),
        ((500, 504, 503), 500),
        # §16.7 step 6: among the 4xx, those that let the caller resubmit come first.
        ((404, 401), 401),
        ((486, 407), 407),
        ((480, 415), 415),
        ((404, 420), 420),
        ((486, 484), 484),
        ((401, 302), 302),  # ... but a lower class still wins
        ((403, 603), 603),
    ],
)
def test_best_response_order(statuses: tuple[int, ...], status: int) -> None:
    assert chosen(*statuses)[0] == status


def test_best_response_of_one_is_it() -> None:
    [only] = answers(408)
    assert best_response([only]) is only


def test_best_response_within_a_rank_is_the_lowest_status() -> None:
    assert chosen(486, 480) == (480, "branch1")
    assert chosen(407, 401) == (401, "branch1")


def test_best_response_tie_is_the_first_branch() -> None:
    assert chosen(486, 486, 486) == (486, "branch0")
    assert chosen(500, 404, 404) == (404, "branch1")


def test_best_response_needs_a_response() -> None:
    with pytest.raises(ValueError, match="at least one"):
        best_response([])


@pytest.mark.parametrize(
    ("status", "sent"),
    [(503, 500), (500, 500), (408, 408), (486, 486), (603, 603), (302, 302), (200, 200)],
)
def test_forwarded_status(status: int, sent: int) -> None:
    # §16.7 step 6: a 503 chosen as best goes back as 500, not as "this proxy is down".
    assert forwarded_status(status) == sent


def test_best_response_keeps_the_branch_s_headers() -> None:
    # The chosen response is the branch's own: its Via stack (ours on top, which the
    # caller strips, §16.7 step 3) and its headers, such as a challenge, unchanged.
    challenge = build_response(
        INVITE,
        401,
        to_tag="branch1",
        headers=(("WWW-Authenticate", 'Digest realm="example.com", nonce="n1"'),),
    )
    best = best_response([*answers(404), challenge])
    assert best is challenge
    assert best.header("www-authenticate") == 'Digest realm="example.com", nonce="n1"'
    assert len(best.via) == 2


def challenge(status: int, to_tag: str, header: str, realm: str) -> Response:
    return build_response(
        INVITE, status, to_tag=to_tag, headers=((header, f'Digest realm="{realm}", nonce="n"'),)
    )


def test_challenges_of_every_branch_are_merged_into_the_best() -> None:
    # §16.7 step 7: the caller gets every branch's challenge at once, in one 401 or 407.
    first = challenge(401, "b0", "WWW-Authenticate", "a.example")
    second = challenge(407, "b1", "Proxy-Authenticate", "b.example")
    busy = build_response(INVITE, 486, to_tag="b2")
    responses = [first, second, busy]
    merged = merge_challenges(best_response(responses), responses)
    assert merged.status == 401
    assert merged.header_lines("www-authenticate") == ['Digest realm="a.example", nonce="n"']
    assert merged.header_lines("proxy-authenticate") == ['Digest realm="b.example", nonce="n"']


def test_only_a_challenge_gets_merged_challenges() -> None:
    responses = [
        build_response(INVITE, 404, to_tag="b0"),
        challenge(401, "b1", "WWW-Authenticate", "x"),
    ]
    not_found = responses[0]
    assert merge_challenges(not_found, responses) is not_found
