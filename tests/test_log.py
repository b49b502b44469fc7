"""Log lines a remote peer can cause: escaped, cut, and throttled with a summary."""

from __future__ import annotations

import logging

import pytest
import trio

from triosip.log import LogThrottle, shown

logger = logging.getLogger("tests.log")


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("Bad Via", 120, "Bad Via"),
        (b"INVITE \x00\xff\r\n", 120, "INVITE \\x00\\xff\\x0d\\x0a"),
        ("é\x1b[2J", 120, "\\xe9\\x1b[2J"),  # no terminal escape gets through
        ("x" * 1000, 10, "xxxxxxxxxx… (+990 more)"),
    ],
)
def test_shown_escapes_and_cuts(text: str | bytes, limit: int, expected: str) -> None:
    assert shown(text, limit) == expected


def test_shown_of_a_whole_datagram_is_short() -> None:
    assert len(shown(b"\xff" * 60_000)) < 600


def summaries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "more bad messages" in r.getMessage()]


async def test_the_throttle_lets_a_burst_through_then_counts(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    throttle = LogThrottle(logger, what="bad messages", burst=3, window=10.0)
    allowed = [throttle.allow("192.0.2.7", "Bad Via") for _ in range(1000)]
    assert allowed.count(True) == 3
    assert allowed[:3] == [True, True, True]
    # Another source has a budget of its own.
    assert throttle.allow("192.0.2.8", "Bad Via")
    assert summaries(caplog) == []
    await trio.sleep(10)
    throttle.allow("192.0.2.7", "Missing Call-ID")  # a new window: the old one summed up
    assert summaries(caplog) == [
        "997 more bad messages from 192.0.2.7 in the last 10 s; reasons: Bad Via ×997"
    ]


async def test_the_throttle_summarises_when_the_flood_stops(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    throttle = LogThrottle(logger, what="bad messages", burst=1, window=10.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(throttle.serve)
        for reason in ["Bad Via", "Bad Via", "Bad CSeq"]:
            throttle.allow("192.0.2.7", reason)
        await trio.sleep(25)  # no event after the burst: serve() must say it
        nursery.cancel_scope.cancel()
    assert summaries(caplog) == [
        "2 more bad messages from 192.0.2.7 in the last 10 s; reasons: Bad Via ×1, Bad CSeq ×1"
    ]
    assert throttle.next_end() == float("inf")  # and forget the source


async def test_the_throttle_bounds_its_memory(autojump_clock: trio.testing.MockClock) -> None:
    throttle = LogThrottle(logger, what="bad messages", burst=1, max_keys=4, max_reasons=2)
    for n in range(10_000):  # spoofed sources, each with a reason of its own
        throttle.allow(f"10.0.{n // 256}.{n % 256}", f"reason {n}")
    windows = throttle._windows
    assert len(windows) == 5  # four sources and "other sources"
    assert all(len(w.reasons) <= 3 for w in windows.values())  # two and "other"
