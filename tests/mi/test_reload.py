"""``POST /reload``: the routes file is loaded again and swapped in for new transactions;
a file that fails to load leaves the old routes running; calls in flight are not lost."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import trio

from tests.support.mi import Call, run_proxy
from triosip.mi import MIConfig
from triosip.script.api import Routes
from triosip.testing.proxy import open_udp_peer
from triosip.testing.sipp import open_uas, run_uac

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from tests.support.mi import Running
    from triosip.testing.proxy import UdpPeer

# OPTIONS is answered by the routes themselves, with a reason phrase that says which
# routes ran; anything else is relayed downstream after an op (a sleep in one version, a
# thread in the other, so the op counters tell how many calls each version routed).
ROUTES = """
from triosip.script.api import RequestContext, Routes, sleep

routes = Routes()
VERSION = "{version}"


@routes.request
async def main(req: RequestContext) -> None:
    if req.method == "OPTIONS":
        await req.reply(200, VERSION)
        return
    if req.method == "INVITE":
        {op}
    await req.relay(req.params.get("downstream"))
"""
SLEEP_OP = "await sleep(0.001)"
THREAD_OP = "await req.call(lambda: None)"


def write_routes(path: Path, version: str, op: str = SLEEP_OP) -> None:
    path.write_text(ROUTES.format(version=version, op=op))


async def options_reason(running: Running, caller: UdpPeer) -> str:
    call = Call.new(caller, running.sip)
    await call.send("OPTIONS")
    response = await caller.receive_response(status=200, method="OPTIONS")
    return response.reason


async def test_reload_swaps_the_routes_and_a_bad_file_keeps_the_old(tmp_path: Path) -> None:
    path = tmp_path / "routes.py"
    write_routes(path, "first")
    with trio.fail_after(10):
        async with (
            run_proxy(path) as running,
            open_udp_peer() as caller,
        ):
            assert await options_reason(running, caller) == "first"

            write_routes(path, "the second version")
            response = await running.mi.post("/reload")
            assert response.status_code == 200
            assert response.json() == {"reloaded": True, "routes": str(path), "reloads": 1}
            assert await options_reason(running, caller) == "the second version"
            handlers = running.proxy.handlers

            path.write_text("from triosip.script.api import Routes\nroutes = Routes(\n")
            response = await running.mi.post("/reload")
            assert response.status_code == 422
            error = response.json()["error"]
            assert error.startswith(f"routes file {path} line 2: SyntaxError"), error
            assert running.proxy.handlers is handlers
            assert await options_reason(running, caller) == "the second version"

            path.write_text("from triosip.script.api import Routes\nroutes = Routes()\n")
            response = await running.mi.post("/reload")
            assert response.status_code == 422
            assert "registers no @routes.request route" in response.json()["error"]

            response = await running.mi.get("/reload")
            assert (response.status_code, response.headers["allow"]) == (405, "POST")
            version = (await running.mi.get("/version")).json()
            assert (version["reloads"], version["routes"]) == (1, str(path))
            assert await options_reason(running, caller) == "the second version"


async def test_reload_without_a_routes_file_is_refused() -> None:
    with trio.fail_after(5):
        async with run_proxy(Routes(), mi=MIConfig(port=0)) as running:
            response = await running.mi.post("/reload")
    assert response.status_code == 409
    assert response.json()["error"] == "this proxy was not started from a routes file"


async def test_reload_picks_up_an_edit_made_within_the_same_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a user runs it: Python caches the file's bytecode in __pycache__, keyed by the
    # source's mtime in whole seconds and its size. An edit within the same second that
    # keeps the size (v1 -> v2) must still be what the reload runs.
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path = tmp_path / "routes.py"
    write_routes(path, "v1")
    with trio.fail_after(10):
        async with (
            run_proxy(path) as running,
            open_udp_peer() as caller,
        ):
            assert await options_reason(running, caller) == "v1"
            write_routes(path, "v2")
            response = await running.mi.post("/reload")
            assert response.status_code == 200
            assert await options_reason(running, caller) == "v2"


async def test_a_reload_during_traffic_loses_no_call(tmp_path: Path) -> None:
    calls = 40
    path = tmp_path / "routes.py"
    write_routes(path, "sleeping", SLEEP_OP)
    reloads = 0
    with trio.fail_after(30):
        # The proxy runs with FAST_TIMERS (T1 10 ms): when it lags 10 ms (coverage, a busy
        # machine) it retransmits an INVITE already answered 180, as RFC 3261 says it must;
        # sipp's uas takes that copy for an unexpected message and used to abort the call,
        # whose BYE then timed out (408). It ignores such messages here; a BYE relayed
        # before its ACK, say, still goes unanswered and fails the call.
        async with open_uas(stop_grace=0, abort_unexpected=False) as uas:
            params = {"downstream": f"udp:{uas.address}"}
            async with run_proxy(path, params=params) as running:

                async def reload_all_along() -> None:
                    nonlocal reloads
                    while True:
                        await trio.sleep(0.02)
                        # Versions of different sizes: see the test above for same-size ones.
                        version = (
                            ("threading", THREAD_OP) if reloads % 2 == 0 else ("sleeping", SLEEP_OP)
                        )
                        write_routes(path, *version)
                        response = await running.mi.post("/reload")
                        assert response.status_code == 200, response.text
                        reloads += 1

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(reload_all_along)
                    uac = await run_uac(
                        uas.address,
                        remote_sending_address=running.sip.host_port,
                        max_calls=calls,
                        rate=40,
                        global_timeout=20,
                    )
                    nursery.cancel_scope.cancel()
                await running.wait_for_tasks(lambda d: d["transactions"] == [])
                stats = await running.stats()

    assert (uac.calls_successful, uac.calls_failed) == (calls, 0), uac.error_log
    assert reloads >= 5
    # Each INVITE ran one op, with the routes of the moment: both versions routed calls.
    ops = stats["ops"]
    assert ops["sleep"]["done"] > 0
    assert ops["thread"]["done"] > 0
    assert ops["sleep"]["done"] + ops["thread"]["done"] == calls
    assert stats["proxy"]["requests_forwarded"]["INVITE"] == calls


async def test_a_routes_file_that_exits_at_import_does_not_end_the_proxy(tmp_path: Path) -> None:
    # This used to end the whole proxy (exit 1, no HTTP answer): the loader caught only
    # Exception, and sys.exit() raises SystemExit.
    path = tmp_path / "routes.py"
    write_routes(path, "first")
    with trio.fail_after(10):
        async with (
            run_proxy(path) as running,
            open_udp_peer() as caller,
        ):
            for body in (
                "import sys\nsys.exit('missing config')\n",
                "raise SystemExit(3)\n",
                "raise GeneratorExit\n",
                "raise BaseExceptionGroup('two', [SystemExit(1), ValueError()])\n",
            ):
                path.write_text(body)
                response = await running.mi.post("/reload")
                assert response.status_code == 422, body
                error = response.json()["error"]
                assert error.startswith(f"routes file {path} line "), error
            assert await options_reason(running, caller) == "first"
