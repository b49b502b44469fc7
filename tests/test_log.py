"""Log lines a remote peer can cause: escaped, cut, and throttled with a summary."""

from __future__ import annotations

import json
import logging
import socket
from typing import TYPE_CHECKING

import pytest
import trio

import triosip.log
from triosip.log import JsonFormatter, LogPrefix, LogTargetError, LogThrottle, log_handler, shown
from triosip.script.api import RequestContext, Routes
from triosip.testing.proxy import open_udp_peer, start_proxy

if TYPE_CHECKING:
    from pathlib import Path

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


# -- a route's exception, a loop: one line each ------------------------------------------------

ROUTES_THAT_RAISE = """\
from triosip.script.api import RequestContext, Routes

routes = Routes()


def lookup(user: str) -> int:
    return len(user) // 0


@routes.request
async def main(req: RequestContext) -> None:
    req.vars["n"] = lookup(req.from_user or "")
"""


async def test_a_route_that_raises_is_one_line_naming_the_route_file_and_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    routes_file = tmp_path / "raising.py"
    routes_file.write_text(ROUTES_THAT_RAISE)
    caplog.set_level(logging.DEBUG, logger="triosip.proxy")
    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            running = await start_proxy(nursery, routes_file)
            invite = caller.request("OPTIONS")
            await caller.send(invite, running.udp)
            answer = await caller.receive_response()
            running.stop()
    assert answer.status == 500
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    # This used to be "route ScriptHandlers.request raised", then a traceback whose first
    # frames were triosip's own.
    [error] = errors
    branch = invite.top_via.branch
    assert error.getMessage() == (
        f"{invite.call_id} {branch} route main raised ZeroDivisionError: integer division or "
        f"modulo by zero at {routes_file}:7"
    )
    assert error.exc_info is None
    [debug] = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert debug.getMessage().startswith(f"{invite.call_id} {branch}")


def relay_to(downstream: str) -> Routes:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        await req.relay(downstream)

    return routes


async def test_a_loop_is_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="triosip.proxy")
    with trio.fail_after(5):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as mirror,
            trio.open_nursery() as nursery,
        ):
            running = await start_proxy(nursery, relay_to(mirror.destination))

            async def bounce() -> None:  # the downstream sends it back: a loop
                await mirror.send((await mirror.receive()).message, running.udp)

            nursery.start_soon(bounce)
            await caller.send(caller.request("MESSAGE"), running.udp)
            answer = await caller.receive_response()
            running.stop()
    assert answer.status == 482
    # This used to be silent: no line said why the request was refused.
    loops = [r.getMessage() for r in caplog.records if "a loop" in r.getMessage()]
    assert len(loops) == 1, loops
    assert "MESSAGE dropped: it came back with a Via of ours" in loops[0]


# -- where lines go and in which form ---------------------------------------------------------


def test_json_lines_carry_the_call_id_and_branch_as_fields() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord(
        "triosip.proxy", logging.INFO, __file__, 1, "%s cannot relay: %s", None, None
    )
    record.args = (LogPrefix("c1@example\n", "z9hG4bK-1"), "no route")
    line = formatter.format(record)
    assert "\n" not in line
    fields = json.loads(line)
    assert fields["call_id"] == "c1@example\\x0a"  # escaped as every shown field is
    assert fields["branch"] == "z9hG4bK-1"
    assert fields["message"] == "c1@example\\x0a z9hG4bK-1 cannot relay: no route"
    assert (fields["level"], fields["logger"]) == ("info", "triosip.proxy")
    assert fields["time"].endswith("Z")


def test_a_log_file_that_cannot_open_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(LogTargetError, match=r"^--log-target .*/missing/x.log: No such file"):
        log_handler(str(tmp_path / "missing" / "x.log"), "text")


def test_syslog_without_dev_log_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triosip.log, "SYSLOG_SOCKET", "/nonexistent/dev/log")
    with pytest.raises(LogTargetError, match=r"^--log-target syslog: cannot reach the syslog"):
        log_handler("syslog", "text")


def test_syslog_lines_reach_the_daemon_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A datagram socket where the daemon's /dev/log would be: what syslog would read.
    path = str(tmp_path / "log")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as daemon:
        daemon.bind(path)
        daemon.settimeout(5)
        monkeypatch.setattr(triosip.log, "SYSLOG_SOCKET", path)
        handler = log_handler("syslog", "json")
        try:
            record = logging.LogRecord("triosip.app", logging.WARNING, __file__, 1, "hi", (), None)
            handler.emit(record)
        finally:
            handler.close()
        datagram = daemon.recv(4096).decode()
    # RFC 3164: <facility daemon (3) * 8 + severity warning (4)>, then the JSON object.
    assert datagram.startswith("<28>{")
    assert json.loads(datagram[4:].rstrip("\x00"))["message"] == "hi"


async def test_route_exceptions_a_peer_causes_at_will_are_throttled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    routes_file = tmp_path / "raising.py"
    routes_file.write_text(ROUTES_THAT_RAISE)
    with trio.fail_after(5):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            running = await start_proxy(nursery, routes_file)
            for _ in range(12):
                await caller.send(caller.request("OPTIONS"), running.udp)
                assert (await caller.receive_response()).status == 500  # each answered
            # The summary line's reasons name what the route raised. (This used to say
            # ExceptionGroup once the route ran in its ops' nursery.)
            [window] = running.proxy._route_error_log._windows.values()
            assert dict(window.reasons) == {"ZeroDivisionError": 7}
            running.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 5  # the rest are counted for the summary line
