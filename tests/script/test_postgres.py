"""Routes on PostgreSQL: a cancelled query is gone from the server (``pg_stat_activity``)
within 100 ms, however the route ran it (``async_``, ``await``, ``gather``, an op timeout,
``launch`` at shutdown); and two ``triosip run`` processes share their state through one
server, and keep serving while it restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
import trio

from tests.support.script import open_harness
from triosip.ops import open_database
from triosip.script.api import OpError, RequestContext, Routes
from triosip.testing.leaks import wait_until
from triosip.testing.postgres import NoPostgres, running, shared_server, sleep_sql, wait_running
from triosip.testing.proxy import open_udp_peer
from triosip.testing.sipp import find_free_port, wait_listening
from triosip.transport import Address

if TYPE_CHECKING:
    from pathlib import Path

    from triosip.ops import Database
    from triosip.testing.proxy import UdpPeer

pytestmark = pytest.mark.usefixtures("nothing_left_behind")

# The bound: from the cancel to the statement's end on the server.
GONE_WITHIN = 0.1


@pytest.fixture
def pg_url() -> str:
    try:
        return shared_server().url
    except NoPostgres as exc:
        pytest.fail(str(exc), pytrace=False)


def sleeping_routes(timeouts: list[OpError]) -> Routes:
    """Routes for ``<mode>``: a 30 s ``pg_sleep`` marked with the Call-ID, run by
    ``async_``, ``await``, ``gather`` (two), ``call`` with a 0.2 s timeout, or ``launch``."""
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        if req.is_stateless:
            return
        query = sleep_sql(req.call_id)
        mode = req.ruri_user
        if mode == "async":
            req.async_(req.db.query(query), resume=resumed)
        elif mode == "await":
            await req.db.query(query)
            await req.reply(500, "Resumed")
        elif mode == "gather":
            await req.gather(req.db.query(query), req.db.query(query))
            await req.reply(500, "Resumed")
        elif mode == "timeout":
            try:
                await req.call(req.db.query(query), timeout=0.2)
            except OpError as exc:
                timeouts.append(exc)
                await req.reply(504, "Lookup Timed Out")
        elif mode == "launch":
            req.launch(req.db.query(query))
            await req.reply(202)

    @routes.resume
    async def resumed(req: RequestContext) -> None:
        await req.reply(500, "Resumed")

    return routes


async def _gone_after(db: Database, marker: str) -> float:
    """Wait until the server no longer runs a statement marked `marker`; how long it took."""
    start = trio.current_time()
    while await running(db, marker):
        pass
    return trio.current_time() - start


@pytest.mark.parametrize(
    ("mode", "statements"), [("async", 1), ("await", 1), ("gather", 2), ("launch", 1)]
)
async def test_a_cancelled_query_is_gone_from_the_server_within_100_ms(
    mode: str, statements: int, pg_url: str, tmp_path: Path
) -> None:
    timeouts: list[OpError] = []
    with trio.fail_after(10):
        async with open_harness(
            sleeping_routes(timeouts), tmp_path, fr_timeout=30.0, db_url=pg_url
        ) as harness:
            db, caller = harness.db, harness.caller
            assert db is not None
            call = await caller.invite(mode)
            await wait_running(db, call.call_id, statements)
            if mode == "launch":
                # The launched query outlives its transaction (202); shutdown cancels it.
                assert (await caller.final_response(call)).response.status == 202
                harness.proxy_scope.cancel()
                await harness.proxy_stopped.wait()
            else:
                await caller.send(call.build("CANCEL"))
            took = await _gone_after(db, call.call_id)
            if mode != "launch":
                assert (await caller.final_response(call)).response.status == 487
            await wait_until(lambda: db.statistics().readers_busy == 0)
            stats = db.statistics()
    assert took < GONE_WITHIN, f"{mode}: still on the server {took * 1000:.0f} ms after"
    assert stats.queries_cancelled == statements


async def test_an_op_timeout_cancels_the_query_on_the_server(pg_url: str, tmp_path: Path) -> None:
    timeouts: list[OpError] = []
    with trio.fail_after(10):
        async with open_harness(
            sleeping_routes(timeouts), tmp_path, fr_timeout=30.0, db_url=pg_url
        ) as harness:
            db, caller = harness.db, harness.caller
            assert db is not None
            call = await caller.invite("timeout")
            final = await caller.final_response(call)
            # The route got the OpTimeout once the server had ended the statement.
            assert await running(db, call.call_id) == 0
    assert (final.response.status, final.response.reason) == (504, "Lookup Timed Out")
    assert "timed out after 0.2 s" in str(timeouts[0])


# -- two proxies, one database -------------------------------------------------------------

NODE_ROUTES = """
from triosip.ops import open_database
from triosip.script.api import OpError, RequestContext, Routes

routes = Routes()


@routes.request
async def main(req: RequestContext) -> None:
    if req.is_stateless:
        return
    action, key = req.ruri_user.split(".", 1)
    if action == "write":
        # Outlives the transaction; the other node reads it.
        req.launch(req.db.execute(
            "INSERT INTO shared_state (k, v) VALUES (?, ?) "
            "ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            [key, req.params["name"]],
        ))
        await req.reply(202)
        return
    try:
        rows = await req.db.query("SELECT v FROM shared_state WHERE k = ?", [key])
    except OpError as exc:
        req.log.info("lookup failed: %s", exc)
        await req.reply(503, "Database Unavailable")
        return
    if rows:
        await req.reply(200, f"Written By {rows[0]['v']}")
    else:
        await req.reply(404)
"""


async def _ask(caller: UdpPeer, node: Address, user: str) -> tuple[int, str]:
    request = caller.request("MESSAGE", f"sip:{user}@example.org")
    await caller.send(request, node)
    while True:
        response = await caller.receive_response()
        if response.call_id == request.call_id:
            return response.status, response.reason


async def _read_until(caller: UdpPeer, node: Address, key: str, expected: int) -> str:
    while True:
        status, reason = await _ask(caller, node, f"read.{key}")
        if status == expected:
            return reason
        await trio.sleep(0.02)


async def test_two_proxies_share_state_and_survive_a_database_restart(
    pg_url: str, tmp_path: Path
) -> None:
    server = shared_server()
    (tmp_path / "node.py").write_text(NODE_ROUTES)
    key = os.urandom(4).hex()
    with trio.fail_after(60):
        async with open_udp_peer() as caller:
            async with open_database(pg_url, readers=1, writers=1) as db:
                await db.execute(
                    "CREATE TABLE IF NOT EXISTS shared_state (k text PRIMARY KEY, v text)"
                )
            nodes: list[Address] = []
            processes: list[trio.Process] = []
            try:
                for name in ("a", "b"):
                    port = find_free_port("udp")
                    log = (tmp_path / f"{name}.log").open("wb")
                    process = await trio.lowlevel.open_process(
                        [sys.executable, "-m", "triosip", "run", str(tmp_path / "node.py"),
                         "--mi", "off", "--listen", f"udp:127.0.0.1:{port}",
                         "--db", pg_url, "--define", f"name={name}"],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                        env={**os.environ, "TRIOSIP_DATA_DIR": str(tmp_path / name)},
                    )  # fmt: skip
                    log.close()
                    processes.append(process)
                    await wait_listening(process, port, "udp")
                    nodes.append(Address("udp", "127.0.0.1", port))
                a, b = nodes
                assert await _ask(caller, b, f"read.{key}") == (404, "Not Found")
                assert (await _ask(caller, a, f"write.{key}"))[0] == 202
                # The launched write on A lands; B reads it.
                assert await _read_until(caller, b, key, 200) == "Written By a"

                await trio.to_thread.run_sync(server.stop, "immediate")
                # Both nodes serve on: the lookup fails, the route answers 503.
                for node in nodes:
                    assert await _ask(caller, node, f"read.{key}") == (
                        503,
                        "Database Unavailable",
                    )
                await trio.to_thread.run_sync(server.start)
                # No proxy restart: their pools reconnect.
                assert await _read_until(caller, a, key, 200) == "Written By a"
                assert (await _ask(caller, b, f"write.{key}"))[0] == 202
                await wait_until_written(caller, a, key, "Written By b")
                for process in processes:
                    assert process.poll() is None, "a node exited"
            finally:
                for process in processes:
                    process.send_signal(signal.SIGTERM)
                with trio.move_on_after(5):
                    for process in processes:
                        await process.wait()
                for process in processes:
                    if process.poll() is None:
                        process.kill()
                        await process.wait()
    for name in ("a", "b"):
        assert "Traceback" not in (tmp_path / f"{name}.log").read_text()
    assert [process.returncode for process in processes] == [0, 0]


async def wait_until_written(caller: UdpPeer, node: Address, key: str, reason: str) -> None:
    # Another process's write: no trio event tells.
    while await _read_until(caller, node, key, 200) != reason:  # noqa: ASYNC110
        await trio.sleep(0.02)
