"""Tests of the sipp harness itself, with real sipp processes on 127.0.0.1.

Each test runs sipp against sipp (no proxy), so that a failure here is the harness's or a
scenario's, never the proxy's. Every test checks at the end that no sipp it started is
left running and that no working directory is left behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pytest
import trio

from triosip.testing.sipp import (
    UAC_CANCEL,
    UAC_RRS,
    UAS_BUSY,
    UAS_RECORD_ROUTE,
    UAS_RINGING,
    UAS_SILENT,
    HarnessError,
    _common_args,
    _duration_ms,
    _percentile,
    find_free_port,
    is_listening,
    open_uas,
    run_uac,
    stop_process,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


def _children() -> list[int]:
    """PIDs of the live (not zombie) children of this test process."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state, fields[1] the parent's PID (proc(5)).
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def _workdirs() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("triosip-sipp-")}


@pytest.fixture(autouse=True)
def _nothing_left_behind(nothing_left_behind: None) -> Iterator[None]:
    # The root conftest's check (no child process, fd or thread), and sipp's own: its
    # working directories.
    before = _workdirs()
    yield
    assert _children() == []
    assert _workdirs() <= before


async def test_uac_to_uas_fifty_calls() -> None:
    with trio.fail_after(30):
        async with open_uas() as uas:
            assert is_listening(uas.pid, uas.port, "udp")
            result = await run_uac(uas.address, rate=200, max_calls=50)
        assert not is_listening(uas.pid, uas.port, "udp")

    assert result.exit_status == 0
    assert result.calls_created == 50
    assert result.calls_successful == 50
    assert result.calls_failed == 0
    assert result.retransmissions == 0
    assert result.response_time_samples == 50
    assert result.response_time_p50_ms is not None
    assert result.response_time_p99_ms is not None
    assert 0 <= result.response_time_p50_ms <= result.response_time_p99_ms < 200
    assert result.counters["TotalCallCreated"] == "50"
    assert "-sn" in result.command
    assert "uac" in result.command
    # 50 calls at 200 calls/s take a quarter of a second.
    assert 0.2 < result.duration < 10
    # The soft exit let the UAS finish every call, its 4 s timewait included.
    assert uas.result.exit_status == 0
    assert uas.result.calls_created == 50
    assert uas.result.calls_successful == 50
    assert uas.result.calls_failed == 0


async def test_uac_cancels_ringing_uas() -> None:
    with trio.fail_after(30):
        async with open_uas(scenario=UAS_RINGING) as uas:
            result = await run_uac(uas.address, scenario=UAC_CANCEL, rate=50, max_calls=10)

    assert result.exit_status == 0, result.error_log
    assert (result.calls_created, result.calls_successful, result.calls_failed) == (10, 10, 0)
    assert result.response_time_samples == 10  # RTD 1 ends at the 487
    # uas_ringing counts a call as successful only once the CANCEL came and the 487 was ACKed.
    assert uas.result.calls_successful == 10, uas.result.error_log
    assert uas.result.calls_failed == 0


def _derived(scenario: Path, tmp_path: Path, *edits: tuple[str, str]) -> Path:
    """A copy of a shipped scenario with text replaced, each replacement checked."""
    text = scenario.read_text(encoding="latin-1")
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / scenario.name
    path.write_text(text, encoding="latin-1")
    return path


# The first Via line of a UAC scenario, and a second one, as a proxy would leave below its own.
_OWN_VIA = "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
_PROXY_VIA = "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK-test-upstream\n"


async def test_ringing_uas_487_carries_the_whole_via_stack(tmp_path: Path) -> None:
    # Through a proxy, the INVITE has two Vias but the proxy's CANCEL only one: the 487
    # must carry the INVITE's two (RFC 3261 §9.2). Here the UAC plays the proxy: its
    # INVITE carries a second Via, and its 487 must come back with it (check_it fails the
    # call otherwise).
    uac = _derived(
        UAC_CANCEL,
        tmp_path,
        (_OWN_VIA + "      From", _OWN_VIA + "      " + _PROXY_VIA + "      From"),
        (
            '<recv response="487" rtd="true">\n',
            '<recv response="487" rtd="true">\n    <action>\n'
            '      <ereg regexp="Via: SIP/2.0/UDP 127[^[:cntrl:]]*[[:cntrl:]]+'
            'Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK-test-upstream" '
            'search_in="msg" check_it="true" assign_to="stack" />\n'
            '      <log message="[$stack]" />\n'  # sipp refuses a variable used once
            "    </action>\n",
        ),
    )
    with trio.fail_after(30):
        async with open_uas(scenario=UAS_RINGING) as uas:
            result = await run_uac(uas.address, scenario=uac, rate=50, max_calls=5)

    assert result.exit_status == 0, result.error_log
    assert result.calls_successful == 5
    assert uas.result.calls_successful == 5


async def test_record_route_uas_copies_record_route(tmp_path: Path) -> None:
    # RFC 3261 §12.1.1: the 200 copies the INVITE's Record-Route, and uac_rrs.xml then
    # sends its ACK and BYE with it as their Route (check_it on the 200 fails the call).
    uac = _derived(
        UAC_RRS,
        tmp_path,
        (
            "      Max-Forwards: 70\n      Subject: Performance Test\n      Content-Type",
            "      Record-Route: <sip:127.0.0.1:9;lr>\n      Max-Forwards: 70\n"
            "      Subject: Performance Test\n      Content-Type",
        ),
        (
            '<recv response="200" rtd="true" rrs="true">\n',
            '<recv response="200" rtd="true" rrs="true">\n    <action>\n'
            '      <ereg regexp="^ *&lt;sip:127.0.0.1:9;lr&gt;$" search_in="hdr" '
            'header="Record-Route:" check_it="true" assign_to="rr" />\n'
            '      <log message="[$rr]" />\n'
            "    </action>\n",
        ),
    )
    with trio.fail_after(30):
        async with open_uas(scenario=UAS_RECORD_ROUTE, stop_grace=0) as uas:
            result = await run_uac(uas.address, scenario=uac, rate=50, max_calls=5)

    assert result.exit_status == 0, result.error_log
    assert result.calls_successful == 5
    assert uas.result.calls_created == 5


async def test_uac_with_record_route_scenario_without_proxy() -> None:
    # No proxy, no Record-Route: the route set is empty, and the ACK and BYE go to the Contact.
    with trio.fail_after(30):
        async with open_uas(stop_grace=0) as uas:
            result = await run_uac(uas.address, scenario=UAC_RRS, rate=100, max_calls=10)

    assert result.exit_status == 0, result.error_log
    assert result.calls_successful == 10
    assert uas.result.calls_created == 10
    assert uas.result.calls_failed == 0
    # Stopped without grace, so each call was still in its 4 s timewait: sipp caught the
    # SIGTERM, wrote its statistics and exited 0.
    assert uas.result.exit_status == 0
    assert uas.result.calls_successful == 0


async def test_busy_uas_fails_every_call() -> None:
    with trio.fail_after(30):
        async with open_uas(scenario=UAS_BUSY) as uas:
            result = await run_uac(uas.address, rate=100, max_calls=5)

    # The built-in uac expects a 200: a 486 is an unexpected message, and sipp ACKs it.
    assert result.exit_status == 1
    assert (result.calls_created, result.calls_successful, result.calls_failed) == (5, 0, 5)
    assert result.failed_unexpected_message == 5
    assert uas.result.calls_successful == 5  # each 486 was ACKed
    assert result.response_time_p50_ms is None


async def test_silent_uas_times_out_every_call() -> None:
    with trio.fail_after(30):
        async with open_uas(scenario=UAS_SILENT) as uas:
            result = await run_uac(uas.address, rate=100, max_calls=5, recv_timeout_ms=300)

    assert result.exit_status == 1
    assert (result.calls_created, result.calls_failed) == (5, 5)
    assert result.failed_timeout_on_recv == 5
    # Timed out at 300 ms, before the first INVITE retransmission (500 ms).
    assert result.retransmissions == 0
    assert uas.result.calls_created == 5


async def test_tcp() -> None:
    with trio.fail_after(30):
        async with open_uas(transport="tcp", scenario=UAS_RINGING) as uas:
            assert is_listening(uas.pid, uas.port, "tcp")
            assert not is_listening(uas.pid, uas.port, "udp")
            result = await run_uac(
                uas.address, transport="tcp", scenario=UAC_CANCEL, rate=100, max_calls=10
            )

    assert result.exit_status == 0, result.error_log
    assert result.calls_successful == 10
    assert uas.result.calls_successful == 10


async def test_remote_sending_address_sends_elsewhere() -> None:
    # -rsa sends every packet to the second UAS while the Request-URI names the first.
    with trio.fail_after(30):
        async with open_uas(stop_grace=0) as named, open_uas(stop_grace=0) as reached:
            result = await run_uac(
                named.address,
                remote_sending_address=reached.address,
                rate=100,
                max_calls=5,
                service="alice",
            )

    assert result.calls_successful == 5
    assert reached.result.calls_created == 5
    assert named.result.calls_created == 0


async def test_global_timeout_stops_new_calls() -> None:
    with trio.fail_after(30):
        async with open_uas(stop_grace=0) as uas:
            result = await run_uac(uas.address, rate=20, max_calls=1000, global_timeout=1.0)

    assert result.exit_status == 0
    assert 0.9 < result.duration < 5
    assert 10 <= result.calls_created < 1000
    assert result.calls_successful == result.calls_created
    assert uas.result.calls_created == result.calls_created


async def test_stop_after_returns_partial_results() -> None:
    # Unanswered INVITEs would keep a global_timeout run going for ~32 s; stop_after doesn't.
    with trio.fail_after(30):
        async with open_uas(scenario=UAS_SILENT, stop_grace=0) as uas:
            result = await run_uac(uas.address, rate=20, max_calls=1000, stop_after=1.0)

    assert 0.9 < result.duration < 5
    assert 10 <= result.calls_created < 1000
    assert result.calls_successful == 0
    assert result.retransmissions > 0  # INVITEs unanswered for 500 ms were sent again
    assert uas.result.calls_created >= 10


async def test_cancelled_uac_is_killed_and_reaped() -> None:
    with trio.fail_after(30):
        async with open_uas(scenario=UAS_SILENT, stop_grace=0) as uas:
            with trio.move_on_after(0.5) as scope:
                await run_uac(uas.address, rate=50, max_calls=1000)
            assert scope.cancelled_caught
            assert _children() == [uas.pid]


async def test_uas_on_a_taken_port_fails_to_start() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with trio.fail_after(30), pytest.raises(HarnessError, match="did not start"):
            async with open_uas(port=port):
                pytest.fail("the UAS should not have started")


async def test_bad_option_is_an_error_with_sipp_s_message() -> None:
    with trio.fail_after(30), pytest.raises(HarnessError, match="no statistics") as info:
        await run_uac("127.0.0.1:9", extra_args=["-no_such_option"])
    assert "-no_such_option" in str(info.value)


async def test_result_is_unavailable_inside_the_block() -> None:
    with trio.fail_after(30):
        async with open_uas(stop_grace=0) as uas:
            with pytest.raises(HarnessError, match="no result"):
                _ = uas.result


async def test_unknown_builtin_scenario_is_refused() -> None:
    # A file name given as a str would silently become "-sn uac.xml": it must be a Path.
    with pytest.raises(ValueError, match="unknown built-in"):
        await run_uac("127.0.0.1:9", scenario="uac.xml")


def test_find_free_port_is_bindable() -> None:
    kinds: tuple[tuple[Literal["udp", "tcp"], int], ...] = (
        ("udp", socket.SOCK_DGRAM),
        ("tcp", socket.SOCK_STREAM),
    )
    for transport, kind in kinds:
        port = find_free_port(transport)
        assert 1024 <= port < 65536
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", port))
            if transport == "tcp":
                sock.listen()
            assert is_listening(os.getpid(), port, transport)
        assert not is_listening(os.getpid(), port, transport)


def test_the_control_port_is_never_the_sip_port(monkeypatch: pytest.MonkeyPatch) -> None:
    # This used to start sipp now and then with "-p P ... -cp P" (one run in a few hundred
    # under a loaded suite): both ports are picked by binding port 0 and letting go, and
    # the kernel may hand a port it just got back out again; sipp then exits 254, "Unable
    # to bind remote control socket". The kernel's choice is made here to repeat itself.
    sip_port, other = find_free_port("udp"), find_free_port("udp")
    handed_out = iter([sip_port, sip_port, other])
    monkeypatch.setattr("triosip.testing.sipp.find_free_port", lambda transport: next(handed_out))
    args = _common_args("udp", port=sip_port, rtt_freq=None)
    assert args[args.index("-p") + 1] == str(sip_port)
    assert args[args.index("-cp") + 1] == str(other)


async def test_stop_process_kills_the_whole_group() -> None:
    # The leader dies of SIGTERM; its child ignores SIGTERM and must be killed with the group.
    script = '(trap "" TERM; exec sleep 60) & echo $!; wait'
    with trio.fail_after(30):
        shell = await trio.lowlevel.open_process(
            ["sh", "-c", script], stdout=subprocess.PIPE, start_new_session=True
        )
        assert shell.stdout is not None
        child = int((await shell.stdout.receive_some()).decode())
        status = await stop_process(shell, grace=0.5, process_group=True)
        await shell.stdout.aclose()
    assert status == -signal.SIGTERM
    # The orphan ignored SIGTERM but was killed with its group (a zombie until init reaps it).
    for _ in range(500):
        if _state(child) in ("Z", "gone"):
            break
        await trio.sleep(0.01)
    assert _state(child) in ("Z", "gone")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


@pytest.mark.parametrize(
    ("values", "percent", "expected"),
    [
        ([], 50, None),
        ([7.0], 99, 7.0),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.0),
        ([float(v) for v in range(1, 101)], 99, 99.0),
        ([float(v) for v in range(1, 101)], 50, 50.0),
        ([0.0] * 99 + [40.0], 99, 0.0),
        ([0.0] * 98 + [40.0, 40.0], 99, 40.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], percent: float, expected: float) -> None:
    assert _percentile(values, percent) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:00:00:004000", 4.0),
        ("00:00:01:500000", 1500.0),
        ("01:02:03:000001", 3_723_000.001),
        ("", 0.0),
        ("garbage", 0.0),
    ],
)
def test_sipp_durations(text: str, expected: float) -> None:
    assert _duration_ms(text) == pytest.approx(expected)
