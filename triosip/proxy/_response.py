"""Choosing the response a stateful proxy sends back (RFC 3261 §16.7)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from triosip.sip import Response

# RFC 3261 §16.7 step 6: the classes in order of preference when no 2xx or 6xx arrived.
# Among the 4xx, 401/407 (a challenge the caller can answer), 415/420/484 (the caller can
# repair the request) are worth more than the rest, as §16.7 step 6 suggests.
_REPAIRABLE = {401, 407, 415, 420, 484}


def _rank(status: int) -> tuple[int, int]:
    klass = status // 100
    if klass == 6:
        return (0, status)
    if klass == 2:
        return (1, status)
    if klass == 3:
        return (2, status)
    if klass == 4:
        return (3 if status in _REPAIRABLE else 4, status)
    return (5, status)


def best_response(responses: Sequence[Response]) -> Response:
    """The final response to forward once every branch has answered (RFC 3261 §16.7 step 6).

    A 6xx wins, then a 2xx, then the lowest class, where a 4xx the caller can act on
    (401, 407, 415, 420, 484) comes before the other 4xx; within that, the lowest status,
    and on a tie the first in `responses` (branch order). When the best is a 401 or 407,
    `merge_challenges` adds the other branches' challenges to it (§16.7 step 7).

    Raises:
        ValueError: `responses` is empty (a caller bug: there is always one per branch).
    """
    if not responses:
        raise ValueError("best_response() needs at least one response")
    return min(responses, key=lambda response: _rank(response.status))


def forwarded_status(status: int) -> int:
    """RFC 3261 §16.7 step 6: a 503 chosen as best goes back as a 500, so that the caller
    does not take it for this proxy being unavailable."""
    return 500 if status == 503 else status


# RFC 3261 §16.7 step 7: the headers that carry a challenge, by the status that carries them.
_CHALLENGE_HEADERS = ("www-authenticate", "proxy-authenticate")


def merge_challenges(best: Response, responses: Sequence[Response]) -> Response:
    """`best` (a 401 or 407) with the WWW-Authenticate and Proxy-Authenticate values of
    every other 401 and 407 in `responses` added (RFC 3261 §16.7 step 7), so that the
    caller can answer every branch's challenge at once. Any other `best` is returned as is.
    """
    if best.status not in (401, 407):
        return best
    merged = best
    for response in responses:
        if response is best or response.status not in (401, 407):
            continue
        for name in _CHALLENGE_HEADERS:
            for value in response.header_lines(name):
                merged = merged.with_header_last(name, value)
    return merged
