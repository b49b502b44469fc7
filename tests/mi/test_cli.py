"""``triosip tasks`` and ``triosip stats`` as a user runs them, against ``triosip run``.

``triosip run`` runs as a subprocess with its MI on a free port (``--mi 127.0.0.1:0``; the
port comes from its log), and so do the commands that ask it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from tests.support.mi import Call
from triosip.cli import main
from triosip.testing.proxy import open_udp_peer
from triosip.testing.sipp import find_free_port
from triosip.transport import Address

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

TRIOSIP = Path(sys.executable).with_name("triosip")

ROUTES = """
from triosip.script.api import RequestContext, Routes, sleep

routes = Routes()


@routes.request
async def main(req: RequestContext) -> None:
    req.async_(sleep(30), resume=done, timeout=20)


@routes.resume
async def done(req: RequestContext) -> None:
    await req.reply(200)
"""


class TriosipRun:
    """A ``triosip run`` process, and where it listens once it says so in its log."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.log = bytearray()
        self.ready = trio.Event()
        self.mi = ""
        self.sip = Address("udp", "127.0.0.1", 0)

    async def read_log(self, stream: trio.abc.ReceiveStream) -> None:
        async with stream:
            async for chunk in stream:
                self.log.extend(chunk)
                text = self.log.decode(errors="replace")
                mi = re.search(r"management interface on http://([\d.]+:\d+)", text)
                sip = re.search(r"listening on udp:127\.0\.0\.1:(\d+)", text)
                if mi and sip and not self.ready.is_set():
                    self.mi = mi.group(1)
                    self.sip = Address("udp", "127.0.0.1", int(sip.group(1)))
                    self.ready.set()


def triosip_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "TRIOSIP_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "100"}


@pytest.fixture
async def triosip_run(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[TriosipRun]:
    routes = tmp_path / "routes.py"
    routes.write_text(ROUTES)
    argv = [str(TRIOSIP), "run", str(routes), "--listen", "udp:127.0.0.1:0"]
    argv += ["--mi", "127.0.0.1:0", "--grace", "0.5"]
    process = await trio.lowlevel.open_process(
        argv, stderr=subprocess.PIPE, env=triosip_env(tmp_path)
    )
    running = TriosipRun(process)
    try:
        assert process.stderr is not None
        nursery.start_soon(running.read_log, process.stderr)
        with trio.fail_after(10):
            await running.ready.wait()
        yield running
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()


async def triosip(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [str(TRIOSIP), *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=triosip_env(tmp_path),
    )


async def test_tasks_and_stats_ask_a_running_proxy(triosip_run: TriosipRun, tmp_path: Path) -> None:
    with trio.fail_after(25):
        async with open_udp_peer() as caller:
            call = Call.new(caller, triosip_run.sip)
            await call.send("INVITE")
            await caller.receive_response(status=100, method="INVITE")

            tasks = await triosip(tmp_path, "tasks", "--mi", triosip_run.mi, "--json")
            assert tasks.returncode == 0, tasks.stderr
            document = json.loads(tasks.stdout)
            [tx] = document["transactions"]
            assert (tx["call_id"], tx["method"], tx["state"]) == (
                call.call_id,
                "INVITE",
                "Proceeding",
            )
            [op] = tx["children"]
            assert op["op"] == {"kind": "sleep", "description": "sleep 30", "timeout": 20}

            filtered = await triosip(
                tmp_path, "tasks", "--mi", triosip_run.mi, "--json", "--method", "BYE"
            )
            assert json.loads(filtered.stdout)["transactions"] == []

            drawn = await triosip(tmp_path, "tasks", "--mi", triosip_run.mi)
            assert drawn.returncode == 0, drawn.stderr
            text = drawn.stdout.decode()
            assert f"Proceeding  IST INVITE {call.branch}" in text
            assert f"Call-ID {call.call_id}" in text
            assert "op sleep  age" in text
            assert "sleep 30" in text

            stats = await triosip(tmp_path, "stats", "--mi", triosip_run.mi, "--json")
            assert stats.returncode == 0, stats.stderr
            counters = json.loads(stats.stdout)
            assert counters["proxy"]["requests_received"] == {"INVITE": 1}
            assert counters["ops"]["sleep"]["running"] == 1

            table = await triosip(tmp_path, "stats", "--mi", triosip_run.mi)
            assert table.returncode == 0, table.stderr
            assert re.search(r"INVITE +1 +0", table.stdout.decode()), table.stdout.decode()

            # --watch redraws in place until Ctrl-C (FORCE_COLOR: draw as on a terminal,
            # so that the first frame shows before the interrupt).
            watch = await trio.lowlevel.open_process(
                [str(TRIOSIP), "tasks", "--mi", triosip_run.mi, "--watch", "--interval", "0.1"],
                stdout=subprocess.PIPE,
                env={**triosip_env(tmp_path), "FORCE_COLOR": "1"},
            )
            assert watch.stdout is not None
            output = b""
            async with watch.stdout:
                async for chunk in watch.stdout:
                    output += chunk
                    if output.count(b"triosip tasks") == 2:  # a frame, then its redraw
                        watch.send_signal(signal.SIGINT)
                        break
                async for chunk in watch.stdout:
                    output += chunk
            assert await watch.wait() == 0
            assert f"Call-ID {call.call_id}" in re.sub(
                r"\x1b\[[0-9;?]*[a-zA-Z]", "", output.decode()
            )

            triosip_run.process.send_signal(signal.SIGTERM)
            assert await triosip_run.process.wait() == 0, triosip_run.log.decode()


async def test_an_mi_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with trio.fail_after(15):
            result = await triosip(
                tmp_path, "run", "--listen", "udp:127.0.0.1:0", "--mi", f"127.0.0.1:{port}"
            )
    assert result.returncode == 2
    [line] = [
        line
        for line in result.stderr.decode().splitlines()
        if not re.match(r"\d{4}-\d\d-\d\d ", line)  # the log lines before it
    ]
    assert line.startswith(
        f"triosip: --mi 127.0.0.1:{port}: the management interface cannot listen"
    )
    assert "(give another --mi HOST:PORT, or --mi off)" in line


def test_no_mi_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    port = find_free_port("tcp")
    assert main(["stats", "--mi", f"127.0.0.1:{port}"]) == 1
    assert capsys.readouterr().err == (
        f"triosip: no triosip MI answers on 127.0.0.1:{port}: is `triosip run` running? (--mi)\n"
    )


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["tasks", "--mi", "off"], "triosip: triosip tasks needs the MI's HOST:PORT, not --mi off"),
        (
            ["stats", "--mi", "8888"],
            "triosip: --mi 8888: write HOST:PORT (e.g. 127.0.0.1:8888) or off",
        ),
        (["tasks", "--watch", "--json"], "triosip: --watch draws the tree; --json prints it once"),
        (["tasks", "--older-than", "-1"], "triosip: --older-than must be >= 0 seconds, not -1.0"),
        (["run", "--mi", "[::1]8888"], "triosip: --mi [::1]8888: write an IPv6 host in brackets"),
    ],
)
def test_usage_errors(argv: list[str], error: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(error)
