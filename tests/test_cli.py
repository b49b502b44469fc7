"""The ``triosip`` command as users run it: a real subprocess (``python -m triosip``).

Mistakes a user can make (a routes file that does not load or is missing, an address in
use, a malformed ``--listen`` or ``--define``) must end in exit code 2 and one line on
standard error that says what to fix, never a traceback. A proxy started with no routes
file relays real sipp calls to ``--define downstream=...``, and SIGTERM stops it with exit
code 0 within its grace period. Every process is stopped by PID and reaped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import pytest
import trio

from triosip.cli import build_config, build_parser
from triosip.testing.proxy import open_udp_peer
from triosip.testing.sipp import (
    UAC_RRS,
    UAS_RECORD_ROUTE,
    find_free_port,
    open_uas,
    run_uac,
    stop_process,
    wait_listening,
)
from triosip.transport import Address

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

EXIT_USAGE = 2
# The management interface's default port is one for the whole machine: tests that run
# at the same time would fight over it. These tests are about SIP, so it is off.
NO_MI = ("--mi", "off")


def _command(args: tuple[str, ...]) -> list[str]:
    if args[:1] == ("run",):
        args = ("run", *NO_MI, *args[1:])
    return [sys.executable, "-m", "triosip", *args]


def _env(tmp_path: Path) -> dict[str, str]:
    # The embedded database goes to the test's folder, not the user's.
    return {**os.environ, "TRIOSIP_DATA_DIR": str(tmp_path / "data")}


async def triosip(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``triosip ARGS`` to its end, in `tmp_path`, and return what it did."""
    with trio.fail_after(20):
        return await trio.run_process(
            _command(args),
            cwd=tmp_path,
            env=_env(tmp_path),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


def problem(result: subprocess.CompletedProcess[bytes]) -> str:
    """The one line saying what to fix; log lines (INFO only) may come before it."""
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr, stderr
    assert result.returncode == EXIT_USAGE, stderr
    lines = stderr.splitlines()
    problems = [line for line in lines if line.startswith("triosip: ")]
    assert len(problems) == 1, stderr
    assert lines[-1] == problems[0], stderr
    assert all(" INFO " in line for line in lines[:-1]), stderr
    return problems[0]


# -- what the user must fix -----------------------------------------------------------------


async def test_routes_file_that_raises(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text(
        "from triosip.script.api import Routes\n\nroutes = Routes()\nraise RuntimeError('boom')\n"
    )
    line = problem(await triosip(tmp_path, "run", "broken.py", "--listen", "udp:127.0.0.1:0"))
    # The file as given (relative to the working directory), the line, the error.
    assert line == "triosip: routes file broken.py line 4: RuntimeError: boom"


async def test_routes_file_with_a_syntax_error(tmp_path: Path) -> None:
    (tmp_path / "syntax.py").write_text("routes = (\n")
    line = problem(await triosip(tmp_path, "run", "syntax.py", "--listen", "udp:127.0.0.1:0"))
    assert line.startswith("triosip: routes file syntax.py line 1: SyntaxError")


async def test_routes_file_without_routes(tmp_path: Path) -> None:
    (tmp_path / "empty.py").write_text("x = 1\n")
    line = problem(await triosip(tmp_path, "run", "empty.py", "--listen", "udp:127.0.0.1:0"))
    assert line == "triosip: routes file empty.py defines no `routes = Routes()`"


async def test_missing_routes_file(tmp_path: Path) -> None:
    line = problem(await triosip(tmp_path, "run", "missing.py", "--listen", "udp:127.0.0.1:0"))
    assert line == "triosip: routes file missing.py not found"


async def test_a_database_that_refuses_us_is_one_line_without_the_password(
    tmp_path: Path, pg_url: str
) -> None:
    # This used to end in a traceback (the driver's error was not among the startup errors),
    # and the log line "database URL" showed the password in clear.
    parts = urlsplit(pg_url)
    refused = urlunsplit(parts._replace(netloc=f"nobody:s3cret@{parts.hostname}:{parts.port}"))
    result = await triosip(tmp_path, "run", "--db", refused, "--listen", "udp:127.0.0.1:0")
    line = problem(result)
    assert line.startswith("triosip: --db postgresql://nobody:***@"), line
    assert "s3cret" not in result.stderr.decode()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_address_in_use(tmp_path: Path, transport: str) -> None:
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            taken.listen()
        port = taken.getsockname()[1]
        listen = f"{transport}:127.0.0.1:{port}"
        line = problem(await triosip(tmp_path, "run", "--listen", listen))
    assert line == f"triosip: cannot listen on {listen}: address already in use"


@pytest.mark.parametrize(
    ("listen", "says"),
    [
        ("udp:localhost:5060", "'localhost' is not an IP address"),
        ("5060", "expected transport:host[:port]"),
        ("sctp:127.0.0.1:5060", "unsupported transport 'sctp'"),
        ("udp:127.0.0.1:70000", "out of range"),
        ("udp:::1:5060", "put an IPv6 address in brackets"),
    ],
)
async def test_malformed_listen(tmp_path: Path, listen: str, says: str) -> None:
    line = problem(await triosip(tmp_path, "run", "--listen", listen))
    assert line.startswith(f"triosip: --listen {listen}: ")
    assert says in line


@pytest.mark.parametrize("define", ["downstream", "=udp:127.0.0.1:5080", " =x"])
async def test_bad_define(tmp_path: Path, define: str) -> None:
    line = problem(
        await triosip(tmp_path, "run", "--listen", "udp:127.0.0.1:0", "--define", define)
    )
    assert line == f"triosip: --define {define!r}: write NAME=VALUE"


# -- a running proxy ----------------------------------------------------------------------


@asynccontextmanager
async def running(tmp_path: Path, *args: str) -> AsyncIterator[trio.Process]:
    """``triosip ARGS`` running in the background; stopped by PID and reaped at the end.
    Its standard error goes to ``tmp_path / "stderr.log"``."""
    stderr = os.open(tmp_path / "stderr.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        process = await trio.lowlevel.open_process(
            _command(args),
            cwd=tmp_path,
            env=_env(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    finally:
        os.close(stderr)
    try:
        yield process
    finally:
        await stop_process(process, first_signal=signal.SIGKILL, grace=0)


def _stderr(tmp_path: Path) -> str:
    return (tmp_path / "stderr.log").read_text()


async def test_run_relays_calls_to_the_downstream(tmp_path: Path) -> None:
    # No routes file: the default routes, which send new calls to --define downstream.
    # The Request-URI names a port nobody listens on: only the downstream makes the calls
    # work. The ACK and BYE follow the Record-Route back through the proxy.
    port = find_free_port("udp")
    nobody = find_free_port("udp")
    with trio.fail_after(30):
        async with open_uas(scenario=UAS_RECORD_ROUTE, stop_grace=0) as uas:
            args = ["run", "--listen", f"udp:127.0.0.1:{port}"]
            args += ["--define", f"downstream=udp:{uas.address}", "--grace", "2"]
            async with running(tmp_path, *args) as process:
                await wait_listening(process, port, "udp")
                result = await run_uac(
                    f"127.0.0.1:{nobody}",
                    scenario=UAC_RRS,
                    remote_sending_address=f"127.0.0.1:{port}",
                    rate=100,
                    max_calls=10,
                    global_timeout=10,
                )
                process.send_signal(signal.SIGTERM)
                with trio.fail_after(3):
                    status = await process.wait()

    assert (result.calls_successful, result.calls_failed) == (10, 0), result.error_log
    assert uas.result.calls_created == 10
    assert status == 0, _stderr(tmp_path)
    assert "Traceback" not in _stderr(tmp_path)


async def test_sigterm_when_idle_exits_0_at_once(tmp_path: Path) -> None:
    port = find_free_port("udp")
    with trio.fail_after(30):
        async with running(
            tmp_path, "run", "--listen", f"udp:127.0.0.1:{port}", "--grace", "5"
        ) as process:
            await wait_listening(process, port, "udp")
            process.send_signal(signal.SIGTERM)
            start = trio.current_time()
            status = await process.wait()
            took = trio.current_time() - start

    assert status == 0, _stderr(tmp_path)
    assert took < 2.0  # nothing to wait for: not the 5 s of grace
    assert "Traceback" not in _stderr(tmp_path)
    assert "stopped" in _stderr(tmp_path)


async def test_sigterm_lets_live_calls_run_for_the_grace_period(tmp_path: Path) -> None:
    # An INVITE rings at a callee that never answers (fr_timeout 30 s). On SIGTERM the
    # proxy refuses new calls with 503, waits the grace period (1 s) for the live one,
    # then answers it 503 and exits 0.
    port = find_free_port("udp")
    with trio.fail_after(30):
        async with open_udp_peer() as caller, open_udp_peer() as callee:
            downstream = f"downstream=udp:{callee.address.host_port}"
            args = ["run", "--listen", f"udp:127.0.0.1:{port}", "--define", downstream]
            async with running(tmp_path, *args, "--grace", "1") as process:
                await wait_listening(process, port, "udp")
                proxy = Address("udp", "127.0.0.1", port)
                live = caller.request("INVITE", "sip:bob@example.com")
                await caller.send(live, proxy)
                await callee.receive_request("INVITE")
                process.send_signal(signal.SIGTERM)
                start = trio.current_time()
                await trio.sleep(0.3)
                late = caller.request("INVITE", "sip:carol@example.com")
                await caller.send(late, proxy)
                refused = await caller.receive_response()
                await caller.send(caller.ack(late, refused), proxy)
                status = await process.wait()
                took = trio.current_time() - start

    assert (refused.status, refused.call_id) == (503, late.call_id)
    assert status == 0, _stderr(tmp_path)
    assert 0.9 < took < 3.0
    assert "answering 1 unanswered transactions 503" in _stderr(tmp_path)
    assert "Traceback" not in _stderr(tmp_path)


@pytest.mark.parametrize(("argv", "reply_to_via"), [([], False), (["--reply-to-via"], True)])
def test_reply_to_via_is_off_unless_asked(argv: list[str], reply_to_via: bool) -> None:
    # Responses go back to the request's source unless the operator opts in (a Via is
    # the client's word: obeying it makes a reflector).
    args = build_parser().parse_args(["run", "--db", "sqlite:///unused.db", *argv])
    assert build_config(args).transport.reply_to_via is reply_to_via


async def test_a_negative_grace_is_refused_at_start(tmp_path: Path) -> None:
    # This used to be taken: the proxy ran, and SIGTERM then ended it with exit code 1
    # and a traceback (a negative timeout), never answering its live calls.
    port = find_free_port()
    args = ("run", "--listen", f"udp:127.0.0.1:{port}", "--grace", "-5")
    with trio.fail_after(20):
        async with running(tmp_path, *args) as process:
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()
    stderr = _stderr(tmp_path)
    assert "Traceback" not in stderr, stderr
    assert process.returncode == EXIT_USAGE, stderr
    assert stderr.splitlines()[-1] == "triosip: --grace must be a number of seconds >= 0, not -5"


async def test_a_t1_beyond_t2_is_refused_in_one_line(tmp_path: Path) -> None:
    # This used to end in a traceback (the timers' own check, unhandled) and exit code 1.
    line = problem(await triosip(tmp_path, "run", "--listen", "udp:127.0.0.1:0", "--t1", "5"))
    assert line == "triosip: --t1 must be at most --t2 (4), not 5"


def test_advertise_names_the_listen_before_it() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--listen",
            "udp:0.0.0.0:5060",
            "--advertise",
            "203.0.113.5",
            "--listen",
            "tcp:0.0.0.0:5060",
            "--advertise",
            "sip.example.com:5080",
            "--alias",
            "proxy.example.com",
        ]
    )
    config = build_config(args)
    assert config.advertised_names == {
        Address("udp", "0.0.0.0", 5060): ("203.0.113.5", None),
        Address("tcp", "0.0.0.0", 5060): ("sip.example.com", 5080),
    }
    assert config.alias_names == (("proxy.example.com", None),)


async def test_advertise_before_any_listen_is_refused(tmp_path: Path) -> None:
    result = await triosip(tmp_path, "run", "--advertise", "203.0.113.5")
    assert result.returncode == 2
    assert "--advertise 203.0.113.5: put it after the --listen it names" in result.stderr.decode()


async def test_a_bad_alias_is_one_line(tmp_path: Path) -> None:
    line = problem(await triosip(tmp_path, "run", "--listen", "udp:127.0.0.1:0", "--alias", "a b"))
    assert line == "triosip: --alias 'a b': 'a b' is not a host name or IP address"


# -- for operators: --help, --pid-file, reload, JSON logs ------------------------------------


def test_help_shows_every_default() -> None:
    # This used to leave one out: --interval.
    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, command in subcommands.choices.items():
        for action in command._actions:
            if action.default in (None, False, [], argparse.SUPPRESS) or not action.help:
                continue
            if "default" not in action.help:
                missing.append(f"triosip {name} {action.option_strings or action.dest}")
    assert missing == []


ROUTES_V1 = """\
from triosip.script.api import RequestContext, Routes

routes = Routes()


@routes.request
async def main(req: RequestContext) -> None:
    req.log.info("answering %s", req.method)
    await req.reply(200, "VERSION")
"""


async def test_pid_file_reload_and_json_logs_of_a_running_proxy(tmp_path: Path) -> None:
    port, mi_port = find_free_port("udp"), find_free_port("tcp")
    routes, pid_file, log_file = tmp_path / "r.py", tmp_path / "run" / "p.pid", tmp_path / "l.json"
    routes.write_text(ROUTES_V1.replace("VERSION", "One"))
    pid_file.parent.mkdir()
    mi = ("--mi", f"127.0.0.1:{mi_port}")
    args = ["run", str(routes), "--listen", f"udp:127.0.0.1:{port}", *mi]
    args += ["--pid-file", str(pid_file), "--log-format", "json", "--log-target", str(log_file)]
    args += ["--log-level", "debug"]  # lower case is taken
    proxy = Address("udp", "127.0.0.1", port)
    with trio.fail_after(30):
        async with running(tmp_path, *args) as process, open_udp_peer() as caller:
            await wait_listening(process, port, "udp")
            assert pid_file.read_text() == f"{process.pid}\n"
            options = caller.request("OPTIONS")
            await caller.send(options, proxy)
            assert (await caller.receive_response()).reason == "One"

            routes.write_text(ROUTES_V1.replace("VERSION", "Two"))
            reloaded = await triosip(tmp_path, "reload", *mi)
            assert reloaded.returncode == 0, reloaded.stderr
            assert reloaded.stdout.decode() == f"reloaded {routes} (reload 1)\n"
            await caller.send(caller.request("OPTIONS"), proxy)
            assert (await caller.receive_response()).reason == "Two"

            routes.write_text("this is not python\n")
            refused = await triosip(tmp_path, "reload", *mi)
            assert refused.returncode == 1
            assert refused.stderr.decode().startswith("triosip: the triosip MI on ")
            assert "422" in refused.stderr.decode()
            await caller.send(caller.request("OPTIONS"), proxy)
            assert (await caller.receive_response()).reason == "Two"  # the old routes run on

            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0, _stderr(tmp_path)

    assert not pid_file.exists()
    assert _stderr(tmp_path) == ""  # all of it went to the file
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    answering = [line for line in lines if line["message"].endswith("answering OPTIONS")]
    assert len(answering) == 3
    assert answering[0]["call_id"] == options.call_id
    assert answering[0]["branch"] == options.top_via.branch
    assert answering[0]["level"] == "info"
    assert any(line["message"].startswith("routes reloaded") for line in lines)
    assert any(line["level"] == "debug" for line in lines)


async def test_a_pid_file_of_a_live_proxy_is_refused(tmp_path: Path) -> None:
    pid_file = tmp_path / "p.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # this test's process: alive
    line = problem(await triosip(tmp_path, "run", "--pid-file", str(pid_file)))
    assert line == f"triosip: --pid-file {pid_file}: triosip runs already as PID {os.getpid()}"
    assert pid_file.read_text() == f"{os.getpid()}\n"


async def test_reload_without_a_proxy_is_one_line(tmp_path: Path) -> None:
    port = find_free_port("tcp")
    result = await triosip(tmp_path, "reload", "--mi", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"triosip: no triosip MI answers on 127.0.0.1:{port}: is `triosip run` running? (--mi)\n"
    )
