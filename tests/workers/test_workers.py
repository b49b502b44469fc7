"""``triosip run --workers 2`` as users run it: a supervisor and two worker processes
sharing the listeners (docs/architecture.md, "Workers").

What a proxy of one process does, two workers do as well: calls (UDP, TCP, serial
forking), CANCEL, retransmissions absorbed; and what only workers can get wrong: a
CANCEL or a retransmission that reaches the other worker (another source port, so
another SO_REUSEPORT hash) must still find its transaction (the hand-off). A killed
worker is replaced while the other's calls go on; SIGTERM stops them all; one MI shows
both. Every process is killed by PID at the end of its test.
"""

from __future__ import annotations

import os
import signal
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

from triosip.mi import MIRefused
from triosip.script import DEFAULT_ROUTES
from triosip.sip import Request, Response
from triosip.testing.callee import Answer, serve_callee
from triosip.testing.leaks import wait_until
from triosip.testing.process import open_triosip
from triosip.testing.proxy import UdpPeer, open_udp_peer
from triosip.testing.sipp import UAC_RRS, UAS_BUSY, UAS_RECORD_ROUTE, open_uas, run_uac
from triosip.transport import owner_of

if TYPE_CHECKING:
    from triosip.testing.process import TriosipProcess

WORKERS = ("--workers", "2")
RINGING = Answer(status=None, ring=True)
ROUTES = Path(__file__).parents[1] / "proxy" / "routes"
TRIOSIP = [sys.executable, "-m", "triosip"]


async def cancelled(caller: UdpPeer, invite: Request, proxy: TriosipProcess) -> None:
    """Take the 200 to the CANCEL and the 487 to `invite`, in either order; ACK the 487."""
    finals: dict[str, Response] = {}
    while len(finals) < 2:
        response = await caller.receive_response()
        finals[response.cseq.method] = response
    assert {method: r.status for method, r in finals.items()} == {"CANCEL": 200, "INVITE": 487}
    await caller.send(caller.ack(invite, finals["INVITE"]), proxy.udp)


def invites_seen(callee: UdpPeer) -> set[str]:
    """The branches of the INVITEs the callee got: one per time the proxy forwarded."""
    return {
        message.top_via.branch or ""
        for message in callee.messages
        if isinstance(message, Request) and message.method == "INVITE"
    }


async def test_calls_go_through_two_workers(tmp_path: Path) -> None:
    calls = 50
    with trio.fail_after(40):
        async with open_uas(scenario=UAS_RECORD_ROUTE, stop_grace=0) as uas:
            args = (*WORKERS, "--define", f"downstream=udp:{uas.address}")
            async with open_triosip(tmp_path, *args) as proxy:
                result = await run_uac(
                    uas.address,
                    scenario=UAC_RRS,
                    remote_sending_address=proxy.udp.host_port,
                    rate=100,
                    max_calls=calls,
                    global_timeout=20,
                )
                stats = await proxy.mi_json("/stats")

    assert (result.calls_successful, result.calls_failed) == (calls, 0), result.error_log
    assert [worker["index"] for worker in stats["workers"]] == [0, 1]
    # One sipp socket: the kernel gives all of it to one worker, which hands the
    # transactions the other owns over to it, so both work.
    assert stats["transport"]["udp_handed_off"] > 0
    assert stats["transport"]["udp_handed_in"] == stats["transport"]["udp_handed_off"]
    assert stats["proxy"]["requests_forwarded"]["INVITE"] == calls
    assert "Traceback" not in proxy.text()


async def test_a_cancel_from_another_port_cancels(tmp_path: Path) -> None:
    # The CANCEL comes from another socket than its INVITE: SO_REUSEPORT hashes it to
    # either worker. Without the hand-off, about half of these would find no transaction
    # (481) and the INVITE would ring on.
    with trio.fail_after(30):
        async with (
            open_udp_peer() as callee,
            open_udp_peer() as caller,
            open_udp_peer() as other,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(serve_callee, callee, RINGING)
            args = (*WORKERS, "--define", f"downstream={callee.destination}")
            async with open_triosip(tmp_path, *args) as proxy:
                for _ in range(8):
                    invite = caller.request("INVITE")
                    await caller.send(invite, proxy.udp)
                    assert (await caller.receive_response(status=180)).status == 180
                    # Its Via names the caller (a NAT rebound): the answers go there.
                    await other.send(caller.cancel(invite), proxy.udp)
                    await cancelled(caller, invite, proxy)
                stats = await proxy.mi_json("/stats")
            nursery.cancel_scope.cancel()

    assert stats["proxy"]["requests_received"]["CANCEL"] == 8


async def test_an_invite_retransmitted_from_another_port_is_absorbed(tmp_path: Path) -> None:
    # A NAT rebinding between an INVITE and its retransmission: the retransmission may
    # reach the other worker. It must be absorbed by the transaction, not forked again.
    calls = 8
    with trio.fail_after(30):
        async with (
            open_udp_peer() as callee,
            open_udp_peer() as caller,
            open_udp_peer() as rebound,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(serve_callee, callee, RINGING)
            args = (*WORKERS, "--define", f"downstream={callee.destination}")
            async with open_triosip(tmp_path, *args) as proxy:
                for _ in range(calls):
                    invite = caller.request("INVITE")
                    await caller.send(invite, proxy.udp)
                    await caller.receive_response(status=180)
                    await rebound.send(invite, proxy.udp)
                    # The transaction answers the retransmission with its last response,
                    # to the Via's port (the caller's).
                    assert (await caller.receive_response(final=False)).status == 180
                stats = await proxy.mi_json("/stats")
            nursery.cancel_scope.cancel()

    assert len(invites_seen(callee)) == calls
    assert stats["proxy"]["requests_forwarded"]["INVITE"] == calls


async def test_tcp_calls_go_through_two_workers(tmp_path: Path) -> None:
    # A TCP connection belongs to the worker that accepted (or opened) it.
    calls = 10
    with trio.fail_after(40):
        async with open_uas(scenario=UAS_RECORD_ROUTE, transport="tcp", stop_grace=0) as uas:
            args = (*WORKERS, "--define", f"downstream=tcp:{uas.address}")
            async with open_triosip(tmp_path, *args) as proxy:
                result = await run_uac(
                    uas.address,
                    scenario=UAC_RRS,
                    transport="tcp",
                    remote_sending_address=proxy.tcp.host_port,
                    rate=50,
                    max_calls=calls,
                    global_timeout=20,
                )

    assert (result.calls_successful, result.calls_failed) == (calls, 0), result.error_log


async def test_serial_forking_through_two_workers(tmp_path: Path) -> None:
    # The failure route of the worker that holds the transaction relays to the second
    # callee; the 486 came back to that worker's own port.
    calls = 20
    with trio.fail_after(40):
        async with (
            open_uas(scenario=UAS_BUSY) as busy,
            open_uas(scenario=UAS_RECORD_ROUTE, stop_grace=0) as second,
        ):
            args = (
                *WORKERS,
                str(ROUTES / "serial_forking.py"),
                *("--define", f"first=udp:{busy.address}"),
                *("--define", f"second=udp:{second.address}"),
            )
            async with open_triosip(tmp_path, *args) as proxy:
                result = await run_uac(
                    busy.address,
                    scenario=UAC_RRS,
                    remote_sending_address=proxy.udp.host_port,
                    rate=100,
                    max_calls=calls,
                    global_timeout=20,
                )
                stats = await proxy.mi_json("/stats")

    assert (result.calls_successful, result.calls_failed) == (calls, 0), result.error_log
    assert (busy.result.calls_successful, busy.result.calls_failed) == (calls, 0)
    assert second.result.calls_created == calls
    assert stats["proxy"]["requests_forwarded"]["INVITE"] == 2 * calls


async def invite_owned_by(caller: UdpPeer, worker: int) -> Request:
    while True:
        invite = caller.request("INVITE")
        if owner_of(bytes(invite), 2) == worker:
            return invite


async def cli_json(tmp_path: Path, proxy: TriosipProcess, command: str) -> Any:
    import json

    assert proxy.mi is not None
    host, port = proxy.mi
    result = await trio.run_process(
        [*TRIOSIP, command, "--mi", f"{host}:{port}", "--json"],
        capture_stdout=True,
        capture_stderr=True,
        cwd=tmp_path,
    )
    return json.loads(result.stdout)


async def test_one_mi_shows_both_workers_and_a_killed_worker_is_replaced(
    tmp_path: Path,
) -> None:
    with trio.fail_after(40):
        async with (
            open_udp_peer() as callee,
            open_udp_peer() as caller,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(serve_callee, callee, RINGING)
            args = (*WORKERS, "--define", f"downstream={callee.destination}")
            async with open_triosip(tmp_path, *args) as proxy:
                # A ringing call held by each worker.
                invites = [await invite_owned_by(caller, worker) for worker in (0, 1)]
                for invite in invites:
                    await caller.send(invite, proxy.udp)
                    await caller.receive_response(status=180)
                tasks = await cli_json(tmp_path, proxy, "tasks")
                stats = await cli_json(tmp_path, proxy, "stats")
                held = {tx["call_id"]: tx["worker"] for tx in tasks["transactions"]}
                assert held == {invite.call_id: w for w, invite in enumerate(invites)}
                pids = [worker["pid"] for worker in stats["workers"]]
                old_mi = stats["workers"][1]["mi"]
                assert stats["workers_restarted"] == 0

                os.kill(pids[1], signal.SIGKILL)
                # Worker 1 is started again, and serves. (A datagram that reached its
                # socket as it died is lost, as on any host: a UAC retransmits it.)
                while True:
                    stats = await proxy.mi_json("/stats")
                    new_pid = stats["workers"][1]["pid"]
                    # Until it serves, the new process names no MI. This used to name
                    # the dead one's: the MI then asked a closed port, and /metrics
                    # said worker 1 was down after it had answered a call.
                    if new_pid not in (None, pids[1]):
                        assert stats["workers"][1]["mi"] != old_mi
                    if new_pid not in (None, pids[1]) and stats["workers"][1]["mi"]:
                        break
                    await trio.sleep(0.05)
                assert stats["workers_restarted"] == 1
                assert stats["workers"][0]["pid"] == pids[0]
                # The call on worker 0 went on: a CANCEL, which worker 0 answers with
                # 200, and the INVITE with 487.
                await caller.send(caller.cancel(invites[0]), proxy.udp)
                await cancelled(caller, invites[0], proxy)
                invite = await invite_owned_by(caller, 1)
                await caller.send(invite, proxy.udp)
                assert (await caller.receive_response(status=180)).status == 180
                metrics = await proxy.mi_text("/metrics")
            nursery.cancel_scope.cancel()

    assert "triosip_worker_restarts_total 1" in metrics
    assert 'triosip_worker_up{worker="1"} 1' in metrics
    assert "worker 1 (pid" in proxy.text()
    assert "starting it again" in proxy.text()


async def test_sigterm_stops_every_worker_and_exits_0(tmp_path: Path) -> None:
    # Promise 4 of docs/cancellation.md, with workers: each worker answers its ringing
    # call 503 once the grace is over (the callee's branch is CANCELled), and all exit 0.
    with trio.fail_after(30):
        async with (
            open_udp_peer() as callee,
            open_udp_peer() as caller,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(serve_callee, callee, RINGING)
            args = (*WORKERS, "--grace", "1", "--define", f"downstream={callee.destination}")
            async with open_triosip(tmp_path, *args) as proxy:
                stats = await proxy.mi_json("/stats")
                pids = [worker["pid"] for worker in stats["workers"]]
                # SIGHUP reloads every worker's routes.
                proxy.process.send_signal(signal.SIGHUP)
                await wait_until(lambda: proxy.text().count("reloaded its routes") == 2)
                invites = [await invite_owned_by(caller, worker) for worker in (0, 1)]
                for invite in invites:
                    await caller.send(invite, proxy.udp)
                    await caller.receive_response(status=180)
                started = trio.current_time()
                proxy.process.send_signal(signal.SIGTERM)
                finals = [await caller.receive_response(method="INVITE") for _ in invites]
                status = await proxy.process.wait()
                took = trio.current_time() - started
            nursery.cancel_scope.cancel()

    assert status == 0, proxy.text()
    assert sorted(r.call_id for r in finals) == sorted(i.call_id for i in invites)
    assert {r.status for r in finals} == {503}
    assert took < 1 + 2
    for pid in pids:
        assert _is_gone(pid)
    assert "Traceback" not in proxy.text()


def _has_text(path: Path) -> bool:
    return path.exists() and bool(path.read_text().strip())


def _is_gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie that its parent did not reap yet too)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


async def test_a_cancel_cancels_a_pending_op_in_its_worker(tmp_path: Path) -> None:
    # Promise 1 of docs/cancellation.md, with workers: the CANCEL (from another port)
    # reaches the worker whose route waits on an external program; the program's process
    # is ended at once and the caller gets 487, not the program's routing.
    program = tmp_path / "route-call"
    program.write_text(f'#!/bin/sh\necho $$ > "{tmp_path}/$SIP_CALL_ID.pid"\nexec sleep 30\n')
    program.chmod(0o755)
    routes = Path(__file__).parents[2] / "routes" / "exec_example.py"
    with trio.fail_after(30):
        async with open_udp_peer() as caller, open_udp_peer() as other:
            args = (*WORKERS, str(routes), "--define", f"program={program}")
            async with open_triosip(tmp_path, *args) as proxy:
                for _ in range(4):
                    invite = caller.request("INVITE")
                    await caller.send(invite, proxy.udp)
                    pid_file = tmp_path / f"{invite.call_id}.pid"
                    await wait_until(partial(_has_text, pid_file))
                    pid = int(pid_file.read_text())
                    sent_at = trio.current_time()
                    await other.send(caller.cancel(invite), proxy.udp)
                    await cancelled(caller, invite, proxy)
                    assert trio.current_time() - sent_at < 1.5
                    await wait_until(partial(_is_gone, pid))
                stats = await proxy.mi_json("/stats")

    assert stats["ops"]["exec"]["cancelled"] == 4
    assert stats["proxy"]["requests_forwarded"].get("INVITE", 0) == 0


async def test_an_fr_timeout_cancels_a_pending_op_in_each_worker(tmp_path: Path) -> None:
    # Promise 1 of docs/cancellation.md, with workers, for the fr timer: in each worker
    # the timer ends the route's pending program at once (its process gone), the caller
    # gets the 408 when the timer fires, not when the program would have ended, and the
    # resume route never runs (no relay, no 500).
    program = tmp_path / "route-call"
    program.write_text(f'#!/bin/sh\necho $$ > "{tmp_path}/$SIP_CALL_ID.pid"\nexec sleep 30\n')
    program.chmod(0o755)
    routes = Path(__file__).parents[2] / "routes" / "exec_example.py"
    defines = ("--define", f"program={program}", "--define", "exec_timeout=20")
    with trio.fail_after(30):
        async with open_udp_peer() as caller:
            args = (*WORKERS, str(routes), *defines, "--fr-timeout", "1")
            async with open_triosip(tmp_path, *args) as proxy:
                for worker in (0, 1):
                    invite = await invite_owned_by(caller, worker)
                    sent_at = trio.current_time()
                    await caller.send(invite, proxy.udp)
                    pid_file = tmp_path / f"{invite.call_id}.pid"
                    await wait_until(partial(_has_text, pid_file))
                    pid = int(pid_file.read_text())
                    final = await caller.receive_response(status=408, method="INVITE")
                    assert 0.9 < trio.current_time() - sent_at < 2.0
                    await caller.send(caller.ack(invite, final), proxy.udp)
                    await wait_until(partial(_is_gone, pid))
                stats = await proxy.mi_json("/stats")

    assert stats["ops"]["exec"]["cancelled"] == 2
    assert stats["proxy"]["requests_forwarded"].get("INVITE", 0) == 0


async def test_the_tree_names_each_transaction_s_worker(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            open_udp_peer() as callee,
            open_udp_peer() as caller,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(serve_callee, callee, RINGING)
            args = (*WORKERS, "--define", f"downstream={callee.destination}")
            async with open_triosip(tmp_path, *args) as proxy:
                invite = await invite_owned_by(caller, 1)
                await caller.send(invite, proxy.udp)
                await caller.receive_response(status=180)
                assert proxy.mi is not None
                result = await trio.run_process(
                    [*TRIOSIP, "tasks", "--mi", "{}:{}".format(*proxy.mi)],
                    capture_stdout=True,
                    env={**os.environ, "COLUMNS": "200"},
                )
                reloaded = await proxy.mi_post("/reload")
                again = await trio.run_process(
                    [*TRIOSIP, "reload", "--mi", "{}:{}".format(*proxy.mi)], capture_stdout=True
                )
                # A bad parameter gets the one 400 a worker would give.
                with pytest.raises(MIRefused, match=r"answered 400: .*limit"):
                    await proxy.mi_json("/tasks", {"limit": "many"})
            nursery.cancel_scope.cancel()

    tree = result.stdout.decode()
    assert "1 of 1 transactions" in tree
    assert "worker 1" in tree
    assert invite.call_id in tree
    # POST /reload reloads every worker.
    # The worker names its routes file by the path it imported it from (an editable
    # install's link, say): the same file.
    routes = reloaded.pop("routes")
    assert await trio.Path(routes).resolve() == await trio.Path(DEFAULT_ROUTES).resolve()
    assert reloaded == {"reloaded": True, "reloads": 1, "workers": 2}
    assert again.stdout.decode() == f"reloaded {routes} (reload 2)\n"


async def test_mistakes_get_one_line_and_exit_2(tmp_path: Path) -> None:
    with trio.fail_after(30):
        bad = await trio.run_process(
            [*TRIOSIP, "run", "--workers", "two", "--mi", "off"],
            capture_stderr=True,
            check=False,
            cwd=tmp_path,
        )
        async with open_triosip(tmp_path, *WORKERS) as proxy:
            # The address is taken: the first worker says so, the supervisor exits 2.
            taken = await trio.run_process(
                [*TRIOSIP, "run", *WORKERS, "--mi", "off", "--listen", str(proxy.udp)],
                capture_stderr=True,
                check=False,
                cwd=tmp_path,
                env={**os.environ, "TRIOSIP_DATA_DIR": str(tmp_path / "data")},
            )

    assert bad.returncode == 2
    assert (
        bad.stderr.decode().strip() == "triosip: --workers two: give a number of processes, or auto"
    )
    assert taken.returncode == 2, taken.stderr.decode()
    last = taken.stderr.decode().strip().splitlines()[-1]
    assert last == f"triosip: cannot listen on {proxy.udp}: address already in use"


async def test_a_worker_that_dies_at_once_is_started_again_after_a_pause(tmp_path: Path) -> None:
    # Routes that exit the process on import while a marker file exists: a worker killed
    # then dies again at each start, and the supervisor waits longer between starts.
    marker = tmp_path / "broken"
    routes = tmp_path / "routes.py"
    routes.write_text(
        "import os\n"
        f"if os.path.exists({str(marker)!r}):\n"
        "    os._exit(3)\n"
        "from triosip.script.default_routes import routes\n"
    )
    with trio.fail_after(40):
        async with open_triosip(tmp_path, *WORKERS, str(routes)) as proxy:
            stats = await proxy.mi_json("/stats")
            marker.touch()
            os.kill(stats["workers"][1]["pid"], signal.SIGKILL)
            await wait_until(lambda: "exited with 3" in proxy.text())
            marker.unlink()
            await wait_until(lambda: proxy.text().count("worker 1 started") == 2)
            stats = await proxy.mi_json("/stats")

    assert "starting it again in 1.00 s" in proxy.text()  # the pause grows
    assert "did not report ready" not in proxy.text()
    assert stats["workers_restarted"] >= 2
    assert stats["workers"][1]["pid"] is not None
