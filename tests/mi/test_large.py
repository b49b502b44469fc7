"""The MI of a proxy holding a thousand live transactions: serving ``/tasks`` never holds
the loop for long, and ``?limit`` and ``?summary`` (``triosip tasks --limit/--summary``)
bound what comes back while saying how many there are in all.

One proxy serves every check here (filling it is what takes time): each INVITE waits on
a 60 s sleep op, so that its transaction stays live with a task under it.
"""

from __future__ import annotations

import gc
import json
import time
from typing import TYPE_CHECKING, Any

import trio

from tests.support.mi import Call, run_proxy
from triosip.cli import main
from triosip.script.api import RequestContext, Routes, sleep
from triosip.testing.proxy import open_udp_peer

if TYPE_CHECKING:
    import pytest

    from tests.support.mi import Running

TRANSACTIONS = 1000
# The longest the loop may run something else than a task that wakes every millisecond,
# in CPU time (so that other processes of a busy machine do not count): a slice of
# /tasks costs ~8 ms; the whole document in one go cost 130 ms and more.
MAX_STRETCH = 0.040


def holding_routes() -> Routes:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        req.async_(sleep(60), resume=never, timeout=60)

    @routes.resume
    async def never(req: RequestContext) -> None:
        raise AssertionError("resumed")

    return routes


async def fill(running: Running) -> None:
    layer = running.proxy.transactions
    async with open_udp_peer() as caller:
        for sent in range(1, TRANSACTIONS + 1):
            await Call.new(caller, running.sip).send("INVITE")
            if sent % 100 == 0:  # in bursts the proxy's socket buffer takes
                # The layer's counters have no event to wait on: poll them.
                while layer.statistics().server_active < sent:  # noqa: ASYNC110
                    await trio.sleep(0.005)


class Ticker:
    """Wakes every millisecond and keeps the longest gap between two wake-ups, in this
    thread's CPU time."""

    def __init__(self) -> None:
        self.longest = 0.0

    async def run(self) -> None:
        last = time.thread_time()
        while True:
            await trio.sleep(0.001)
            now = time.thread_time()
            self.longest = max(self.longest, now - last)
            last = now


async def get_raw(running: Running, target: str) -> dict[str, Any]:
    """GET `target` on a stream of our own, the body read whole and parsed only after (so
    that parsing it is not counted as the MI's stretch)."""
    stream = await trio.open_tcp_stream(*running.mi_address)
    async with stream:
        await stream.send_all(
            f"GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode()
        )
        received = bytearray()
        while chunk := await stream.receive_some(1 << 20):
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    document: dict[str, Any] = json.loads(body)
    return document


async def test_a_thousand_transactions(capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(30):
        async with (
            run_proxy(holding_routes(), fr_timeout=120.0, fr_inv_timeout=120.0) as running,
            trio.open_nursery() as nursery,
        ):
            await fill(running)
            # As `triosip run` does every second: what lives is out of the collector's
            # sight, whose full collections would otherwise be the longest stretch here.
            gc.freeze()
            try:
                ticker = Ticker()
                nursery.start_soon(ticker.run)
                await trio.sleep(0.01)
                ticker.longest = 0.0
                document = await get_raw(running, "/tasks")
                longest = ticker.longest
            finally:
                gc.unfreeze()
            # This used to be ~130 ms (and more on a busy machine): the whole document was
            # sampled, built and encoded in one step, and SIP waited.
            assert longest < MAX_STRETCH, f"{longest * 1000:.0f} ms without a checkpoint"
            assert len(document["transactions"]) == TRANSACTIONS
            assert document["summary"]["shown"] == TRANSACTIONS
            await check_limit_and_summary(running)
            await check_the_cli(running, capsys)
            nursery.cancel_scope.cancel()


async def check_limit_and_summary(running: Running) -> None:
    counts = {
        "transactions": TRANSACTIONS,
        "matched": TRANSACTIONS,
        "methods": {"INVITE": TRANSACTIONS},
        "states": {"Proceeding": TRANSACTIONS},
        "ops_running": TRANSACTIONS,
        "ops": {"sleep": TRANSACTIONS},
        "launched": 0,
    }
    everything = await running.tasks()
    limited = await running.tasks(limit="10")
    assert limited["summary"] == {**counts, "shown": 10}
    # The oldest first: the ten that came first.
    assert [tx["name"] for tx in limited["transactions"]] == [
        tx["name"] for tx in everything["transactions"][:10]
    ]
    ages = [tx["age"] for tx in limited["transactions"]]
    assert ages == sorted(ages, reverse=True)
    summary = await running.tasks(summary="1")
    assert summary == {"summary": {**counts, "shown": 0}}
    none = await running.tasks(method="BYE", limit="5")
    assert none["transactions"] == []
    assert (none["summary"]["matched"], none["summary"]["methods"]) == (0, {})
    table = (await running.mi.get("/transactions", params={"limit": "3"})).json()
    assert len(table["transactions"]) == 3
    assert table["summary"]["matched"] == TRANSACTIONS


async def check_the_cli(running: Running, capsys: pytest.CaptureFixture[str]) -> None:
    mi = f"{running.mi_address[0]}:{running.mi_address[1]}"

    async def triosip(*args: str) -> str:
        capsys.readouterr()
        assert await trio.to_thread.run_sync(main, ["tasks", "--mi", mi, *args]) == 0
        return capsys.readouterr().out

    drawn = await triosip()  # 50 by default, and how many more
    assert drawn.splitlines()[0] == (
        "triosip tasks  50 of 1,000 transactions · 1,000 ops running · 0 launched"
    )
    assert drawn.count("IST INVITE") == 50
    assert "states: Proceeding 1,000" in drawn
    assert "… and 950 more transactions" in drawn

    assert (await triosip("--limit", "3")).count("IST INVITE") == 3
    assert len(json.loads(await triosip("--json"))["transactions"]) == TRANSACTIONS
    assert len(json.loads(await triosip("--json", "--limit", "2"))["transactions"]) == 2

    summary = (await triosip("--summary")).splitlines()
    assert summary == [
        "triosip tasks  0 of 1,000 transactions · 1,000 ops running · 0 launched",
        "├── states: Proceeding 1,000",
        "├── methods: INVITE 1,000",
        "└── ops: sleep 1,000",
    ]
