"""Load bounds of the transaction layer: the cap (503), pike, lean held transactions, Timer G.

Against the recording transport of ``helpers.py``, on autojump time, except the shutdown
test, which measures CPU time.
"""

from __future__ import annotations

import gc
import time
from typing import TYPE_CHECKING

import trio
import trio.testing

from tests.support.transaction import FakeTransport, ack_for, cancel_for, inbound, request, response
from triosip.sip import build_response
from triosip.transaction import LoadLimits, ServerState, TimerConfig, TransactionLayer
from triosip.transport import Address

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from triosip.transaction import ServerTransaction
    from triosip.transport import Inbound

OK = "SIP/2.0 200 OK"
BUSY = "SIP/2.0 486 Busy Here"
UNAVAILABLE = "SIP/2.0 503 Service Unavailable"


async def answer_200(st: ServerTransaction) -> None:
    await st.respond(response(st.request, 200))


async def start_layer(
    nursery: trio.Nursery,
    transport: FakeTransport,
    on_request: Callable[[ServerTransaction], Awaitable[None]] = answer_200,
    limits: LoadLimits | None = None,
    timers: TimerConfig | None = None,
) -> TransactionLayer:
    layer = TransactionLayer(
        transport,
        timers=timers or TimerConfig(),
        on_request=on_request,
        on_stray=lambda inbound: None,
        limits=limits or LoadLimits(),
    )
    await nursery.start(layer.serve)
    return layer


def transaction_tasks(nursery: trio.Nursery) -> set[str]:
    """The names of the tasks in the layer's transactions nursery (public trio API)."""
    (serve_task,) = [t for t in nursery.child_tasks if t.name.endswith("serve")]
    (transactions,) = serve_task.child_nurseries
    return {task.name for task in transactions.child_tasks}


def options(n: int, source_port: int = 5070) -> Inbound:
    return inbound(
        request("OPTIONS", branch=f"z9hG4bKopt{n}", call_id=f"call-{n}"),
        Address("udp", "192.0.2.10", source_port),
    )


# --- A: the cap --------------------------------------------------------------------------


async def test_beyond_the_cap_new_requests_get_a_stateless_503_until_some_expire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # This used to create a transaction for every new request, without limit: 4,000
    # OPTIONS/s built 127,000 of them and 1.4 GB in 32 s.
    transport = FakeTransport()
    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, limits=LoadLimits(max_transactions=3))
        start = trio.current_time()
        for n in range(3):
            layer.receive(options(n))
        await trio.sleep(0.1)
        assert len(layer.server_transactions()) == 3  # answered, held for Timer J
        layer.receive(options(3))
        assert len(layer.server_transactions()) == 3  # no transaction for it
        assert transport.lines() == [OK, OK, OK, UNAVAILABLE]
        rejected = transport.sent[-1].message
        assert rejected.header("Retry-After") is not None
        assert rejected.call_id == "call-3"
        assert rejected.to.tag  # RFC 3261 §8.2.6.2
        # A retransmission of an accepted request is still absorbed: the 200 again.
        layer.receive(options(0))
        assert transport.lines()[-1] == OK
        # An ACK and a CANCEL of nothing live never get a 503.
        invite = request(branch="z9hG4bKinv")
        layer.receive(inbound(ack_for(invite, response(invite, 486))))
        layer.receive(inbound(cancel_for(invite)))
        assert transport.lines()[-1] == "SIP/2.0 481 Call/Transaction Does Not Exist"
        stats = layer.statistics()
        assert stats.rejected_overload == 1
        assert stats.server_total == 3
        await trio.sleep_until(start + 32.2)  # Timer J = 64*T1 freed them
        assert layer.server_transactions() == []
        layer.receive(options(4))
        await trio.sleep(0.1)
        assert transport.lines()[-1] == OK
        assert layer.statistics().server_total == 4
        nursery.cancel_scope.cancel()


async def test_a_cancel_of_a_ringing_invite_is_served_beyond_the_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    layer: TransactionLayer

    async def on_request(st: ServerTransaction) -> None:
        if st.request.method == "CANCEL":
            invite_st = layer.find_invite(st.request)
            assert invite_st is not None
            await st.respond(response(st.request, 200))
            await invite_st.respond(response(invite_st.request, 487))
        else:
            await trio.sleep_forever()  # ringing

    invite = request()
    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request, LoadLimits(max_transactions=1))
        layer.receive(inbound(invite))
        await trio.sleep(1.0)
        layer.receive(inbound(cancel_for(invite)))
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert "SIP/2.0 487 Request Terminated" in transport.lines()
    assert UNAVAILABLE not in transport.lines()
    assert layer.statistics().rejected_overload == 0


# --- B: pike -----------------------------------------------------------------------------


async def test_pike_drops_new_requests_beyond_the_rate_of_a_source_silently(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, limits=LoadLimits(pike_rate=5.0))
        for n in range(8):  # 8 at once: a burst of 5 is allowed, 3 dropped
            layer.receive(options(n))
        layer.receive(options(0))  # a retransmission is no new request: absorbed in Trying
        # Another source has its own bucket.
        layer.receive(
            inbound(request("OPTIONS", branch="z9hG4bKother"), Address("udp", "192.0.2.99", 5060))
        )
        await trio.sleep(1.0)  # refilled: 5 more
        for n in range(8, 14):
            layer.receive(options(n))
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    stats = layer.statistics()
    assert stats.server_total == 5 + 1 + 5
    assert stats.rate_limited == 3 + 1
    assert transport.lines().count(OK) == 5 + 1 + 5
    assert UNAVAILABLE not in transport.lines()


async def test_pike_keeps_a_bounded_table_of_sources(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    async with trio.open_nursery() as nursery:
        layer = await start_layer(
            nursery, transport, limits=LoadLimits(pike_rate=1.0, pike_sources=100)
        )
        for n in range(1000):  # spoofed sources, one request each
            host = f"10.0.{n // 250}.{n % 250}"
            layer.receive(
                inbound(
                    request("OPTIONS", branch=f"z9hG4bKs{n}", call_id=f"s{n}"),
                    Address("udp", host, 5060),
                )
            )
        assert layer.pike_sources() == 100
        nursery.cancel_scope.cancel()
    assert layer.statistics().rate_limited == 0


# --- A: lean held transactions, D: shutdown --------------------------------------------------


async def test_finished_transactions_are_held_without_a_task_and_still_absorb(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport)
        start = trio.current_time()
        layer.receive(options(1))
        await trio.sleep(0.1)
        # Answered: its task and nursery are gone, the layer holds a record for Timer J.
        assert transaction_tasks(nursery) == set()
        (st,) = layer.server_transactions()
        assert st.state is ServerState.COMPLETED
        assert layer.statistics().server_held == 1
        assert layer.statistics().server_active == 0
        layer.receive(options(1))
        assert transport.lines() == [OK, OK]
        assert transport.sent[1].data == transport.sent[0].data
        assert st.request.call_id == "call-1"  # still readable (re-parsed)
        await trio.sleep_until(start + 32.01)
        assert layer.server_transactions() == []
        assert layer.statistics().server_held == 0
        nursery.cancel_scope.cancel()


async def test_shutdown_with_many_held_transactions_is_quick() -> None:
    # This used to take 18 s with 127,000 finished transactions held: each was a task
    # sleeping in Timer J, and each had to be cancelled and unwound.
    count = 5000
    transport = FakeTransport()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            layer = await start_layer(nursery, transport)
            for n in range(count):
                layer.receive(options(n))
                if n % 500 == 0:
                    await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()
            assert layer.statistics().server_held == count
            assert transaction_tasks(nursery) == set()
            gc.collect()
            started = time.process_time()
            nursery.cancel_scope.cancel()
        spent = time.process_time() - started
    assert layer.server_transactions() == []
    assert spent < 0.1, spent


# --- C: Timer G amplification ------------------------------------------------------------


async def test_timer_g_resends_a_final_larger_than_its_request_at_most_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # This used to send a big error response 11 times (Timer G until Timer H): a small
    # request from a spoofed source bought 11 times its size in traffic to the victim.
    transport = FakeTransport()
    warning = ("Warning", f'399 proxy.example.com "{"x" * 1000}"')

    async def on_request(st: ServerTransaction) -> None:
        await st.respond(build_response(st.request, 486, to_tag="a6c85cf", headers=[warning]))

    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        start = trio.current_time()
        layer.receive(inbound(request()))
        await trio.sleep_until(start + 31.9)
        (st,) = layer.server_transactions()
        assert st.state is ServerState.COMPLETED
        await trio.sleep_until(start + 32.1)  # Timer H still ends it
        assert layer.server_transactions() == []
        nursery.cancel_scope.cancel()
    times = [round(t - start, 6) for t in transport.times(BUSY)]
    assert times == [0, 0.5, 1.5]  # the final, then 2 retransmissions


async def test_timer_g_resends_a_final_smaller_than_its_request_as_rfc_3261_says(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()

    async def on_request(st: ServerTransaction) -> None:
        await st.respond(response(st.request, 486))

    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        start = trio.current_time()
        layer.receive(inbound(request(extra=f"Subject: {'y' * 1000}\r\n")))
        await trio.sleep_until(start + 32.1)
        nursery.cancel_scope.cancel()
    assert len(transport.times(BUSY)) == 11
