"""A SIPVicious scan of ``triosip run`` (PyPI ``sipvicious``, in the ``test`` extra): the
proxy must come out of it serving.

``sipvicious_svmap`` (OPTIONS, then INVITE) finds SIP devices; ``sipvicious_svwar``
guesses extensions with REGISTER, OPTIONS or INVITE. Both run against a ``triosip run``
subprocess on 127.0.0.1 whose default routes relay to a callee that answers 200; each
scan is a subprocess with a timeout and a bounded range of extensions. Afterwards the
proxy is still running, its log holds no traceback and no ERROR line, and a probe
OPTIONS is still relayed and answered 200. Every process is stopped by PID and reaped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from triosip.testing.fuzz import FuzzCallee
from triosip.testing.proxy import UdpPeer, open_udp_peer
from triosip.testing.sipp import find_free_port, stop_process, wait_listening
from triosip.transport import Address

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

BIN = Path(sys.executable).parent
SVMAP = BIN / "sipvicious_svmap"
SVWAR = BIN / "sipvicious_svwar"


@asynccontextmanager
async def running_proxy(tmp_path: Path, port: int, downstream: str) -> AsyncIterator[trio.Process]:
    """``triosip run`` on UDP and TCP 127.0.0.1:`port`, stderr in ``tmp_path/stderr.log``."""
    command = [sys.executable, "-m", "triosip", "run", "--mi", "off", "--log-level", "INFO"]
    command += ["--listen", f"udp:127.0.0.1:{port}", "--listen", f"tcp:127.0.0.1:{port}"]
    # The callee answers everything at once; fr_timeout only matters on a busy machine,
    # where a 408 would make the proxy retransmit it to a scanner that never ACKs (Timer G,
    # 32 s of it: the scanner never sees the silence it waits for).
    command += ["--define", f"downstream={downstream}", "--fr-timeout", "20"]
    stderr = os.open(tmp_path / "stderr.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        process = await trio.lowlevel.open_process(
            command,
            cwd=tmp_path,
            env={**os.environ, "TRIOSIP_DATA_DIR": str(tmp_path / "data")},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    finally:
        os.close(stderr)
    try:
        await wait_listening(process, port, "udp")
        yield process
    finally:
        await stop_process(process, first_signal=signal.SIGKILL, grace=0)


async def scan(tmp_path: Path, *argv: str | Path) -> subprocess.CompletedProcess[bytes]:
    """Run one sipvicious tool to its end (it gives up on silence by itself)."""
    # A scan takes 2-4 s on an idle machine; the bound is for a machine busy with more.
    with trio.fail_after(40):
        return await trio.run_process(
            [str(arg) for arg in argv],
            cwd=tmp_path,
            # sipvicious keeps its sessions under $HOME/.sipvicious.
            env={**os.environ, "HOME": str(tmp_path)},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def probe(caller: UdpPeer, proxy: Address) -> int:
    options = caller.request("OPTIONS", "sip:bob@127.0.0.1")
    await caller.send(options, proxy)
    with trio.fail_after(3):
        while True:
            response = await caller.receive_response()
            if response.call_id == options.call_id:
                return response.status


async def test_sipvicious_scans_leave_the_proxy_serving(tmp_path: Path) -> None:
    port = find_free_port("udp")
    proxy = Address("udp", "127.0.0.1", port)
    local = ("-b", "127.0.0.1", "-x", "127.0.0.1")  # bind and name loopback only
    with trio.fail_after(180):
        async with (
            open_udp_peer(strict=False) as callee_peer,
            open_udp_peer() as caller,
            trio.open_nursery() as nursery,
        ):
            callee = FuzzCallee(callee_peer)
            nursery.start_soon(callee.serve)
            async with running_proxy(tmp_path, port, callee_peer.destination) as process:
                scans = [
                    await scan(tmp_path, SVMAP, *local, f"-p{port}", "127.0.0.1"),
                    await scan(tmp_path, SVMAP, *local, f"-p{port}", "-m", "INVITE", "127.0.0.1"),
                    await scan(tmp_path, SVWAR, *local, "-p", str(port), "-e100-200", "127.0.0.1"),
                    await scan(
                        tmp_path,
                        SVWAR,
                        *local,
                        "-p",
                        str(port),
                        "-e100-150",
                        "-m",
                        "INVITE",
                        "--force",
                        "127.0.0.1",
                    ),
                ]
                alive = process.poll() is None
                status = await probe(caller, proxy) if alive else None
            nursery.cancel_scope.cancel()

    log = (tmp_path / "stderr.log").read_text()
    report = "\n".join(f"$ {' '.join(map(str, s.args))}\n{s.stdout.decode()}" for s in scans)
    assert alive, f"the proxy exited with {process.returncode}:\n{log}\n{report}"
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log
    assert status == 200, f"the probe got {status}\n{log}"
    # The scans reached the proxy and the proxy relayed them: svmap's OPTIONS came back
    # answered by the callee.
    assert "127.0.0.1" in scans[0].stdout.decode(), report
    assert callee.answered > 2
