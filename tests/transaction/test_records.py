"""Transactions run as records by the layer's timers loop: UDP client transactions made by
``start_client``, and server transactions held after their task ended (RFC 3261 §17), on
autojump time against a recording transport."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from tests.support.transaction import (
    LOCAL,
    NEXT_HOP,
    PEER,
    FakeTransport,
    inbound,
    proxied,
    request,
    response,
)
from triosip.transaction import (
    ClientState,
    ClientTransaction,
    TimerConfig,
    TransactionLayer,
    TransactionTimeout,
)
from triosip.transaction._layer import TIMER_SLACK

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from triosip.sip import Response
    from triosip.transaction import ServerTransaction


async def serving(
    nursery: trio.Nursery,
    transport: FakeTransport,
    on_request: Callable[[ServerTransaction], Awaitable[None]] | None = None,
) -> TransactionLayer:
    async def unanswered(_st: ServerTransaction) -> None:
        raise AssertionError("no request is expected")  # pragma: no cover

    layer = TransactionLayer(
        transport,
        timers=TimerConfig(),
        on_request=on_request or unanswered,
        on_stray=lambda _inbound: None,
    )
    await nursery.start(layer.serve)
    return layer


class Ends:
    """The ``on_end`` of a record client transaction: when, and with what."""

    def __init__(self) -> None:
        self.ends: list[tuple[float, BaseException | None]] = []
        self.responses: list[int] = []

    def on_end(self, _client: ClientTransaction, failure: BaseException | None) -> None:
        self.ends.append((trio.current_time(), failure))

    def on_response(self, _client: ClientTransaction, answer: Response) -> None:
        self.responses.append(answer.status)


async def test_ict_record_1xx_stops_timer_a_and_timer_m_ends_it_after_the_2xx(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    ends = Ends()
    invite = proxied("INVITE", branch="z9hG4bKrecord1")
    async with trio.open_nursery() as nursery:
        layer = await serving(nursery, transport)
        start = trio.current_time()
        client = layer.start_client(
            invite, NEXT_HOP, on_response=ends.on_response, on_end=ends.on_end
        )
        await trio.sleep(0.1)
        layer.receive(inbound(response(invite, 180), NEXT_HOP))
        # §17.1.1.2: a provisional stops Timer A (and B): no retransmission while ringing.
        await trio.sleep_until(start + 40.0)
        assert transport.lines() == [f"INVITE {invite.uri_raw} SIP/2.0"]
        assert client.state is ClientState.PROCEEDING
        assert client.timer_deadlines() == {}
        layer.receive(inbound(response(invite, 200), NEXT_HOP))
        assert set(client.timer_deadlines()) == {"M"}
        await trio.sleep_until(start + 40.0 + 32.0 + 2 * TIMER_SLACK)
        nursery.cancel_scope.cancel()
    # RFC 6026 §7.2: Accepted lasts Timer M (64*T1) after the 2xx, then it ends cleanly.
    assert ends.responses == [180, 200]
    ((ended, failure),) = ends.ends
    assert failure is None
    assert ended - (start + 40.0) == pytest.approx(32.0, abs=TIMER_SLACK)


async def test_ict_record_without_accepted_ends_as_its_2xx_is_received(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # RFC 3261 §17.1.1.2 (wait_in_accepted=False, a proxy's branch): a 2xx "MUST cause the
    # client transaction to enter the Terminated state". This used to pass through Accepted
    # with a Timer M of 0 s, and end only when the layer's timers loop next woke.
    transport = FakeTransport()
    ends = Ends()
    states: list[ClientState] = []
    invite = proxied("INVITE", branch="z9hG4bKrecord0")

    def on_response(client: ClientTransaction, answer: Response) -> None:
        states.append(client.state)
        ends.on_response(client, answer)

    async with trio.open_nursery() as nursery:
        layer = await serving(nursery, transport)
        client = layer.start_client(
            invite, NEXT_HOP, on_response=on_response, on_end=ends.on_end, wait_in_accepted=False
        )
        await trio.sleep(0.1)
        layer.receive(inbound(response(invite, 180), NEXT_HOP))
        layer.receive(inbound(response(invite, 200), NEXT_HOP))
        received_at = trio.current_time()
        # Ended within receive(), before anything else ran.
        assert client.state is ClientState.TERMINATED
        assert ends.ends == [(received_at, None)]
        assert client.timer_deadlines() == {}
        assert layer.client_transactions() == []
        nursery.cancel_scope.cancel()
    assert ends.responses == [180, 200]
    # The 2xx is passed up as the machine leaves for Terminated.
    assert states == [ClientState.PROCEEDING, ClientState.TERMINATED]


class TaskSteps(trio.abc.Instrument):
    """Counts the steps of the tasks whose name ends with `suffix`."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(self.suffix):
            self.steps += 1


async def test_a_timer_disarmed_in_a_record_wakes_the_timers_loop_for_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A 1xx disarms the ICT's Timer A and B; the loop's heap entry for Timer A is then
    # stale. This used to wake the layer's timers loop at T1 for nothing (a cancel scope
    # and a trip through the scheduler per call, at low call rates).
    transport = FakeTransport()
    ends = Ends()
    invite = proxied("INVITE", branch="z9hG4bKrecordstale")
    loop = TaskSteps(".serve")
    async with trio.open_nursery() as nursery:
        layer = await serving(nursery, transport)
        client = layer.start_client(
            invite, NEXT_HOP, on_response=ends.on_response, on_end=ends.on_end
        )
        await trio.sleep(0.1)
        layer.receive(inbound(response(invite, 180), NEXT_HOP))
        await trio.sleep(0.1)
        trio.lowlevel.add_instrument(loop)
        await trio.sleep(2.0)  # past Timer A's first T1 (0.5 s)
        trio.lowlevel.remove_instrument(loop)
        assert client.state is ClientState.PROCEEDING
        assert loop.steps == 0
        nursery.cancel_scope.cancel()


async def test_nict_record_retransmits_on_timer_e_until_the_final_then_timer_k_ends_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    ends = Ends()
    options = proxied("OPTIONS", branch="z9hG4bKrecord2")
    async with trio.open_nursery() as nursery:
        layer = await serving(nursery, transport)
        start = trio.current_time()
        client = layer.start_client(
            options, NEXT_HOP, on_response=ends.on_response, on_end=ends.on_end
        )
        await trio.sleep_until(start + 1.6)
        layer.receive(inbound(response(options, 200), NEXT_HOP))
        assert set(client.timer_deadlines()) == {"K"}
        await trio.sleep_until(start + 20.0)
        nursery.cancel_scope.cancel()
    # §17.1.2.2: Timer E at T1, then 2*T1; the final stops it and starts Timer K (T4).
    sent = [round(at - start, 2) for at in transport.times(f"OPTIONS {options.uri_raw} SIP/2.0")]
    assert sent == pytest.approx([0.0, 0.5, 1.5], abs=TIMER_SLACK)
    ((ended, failure),) = ends.ends
    assert failure is None
    assert ended - (start + 1.6) == pytest.approx(5.0, abs=TIMER_SLACK)


async def test_nict_record_without_an_answer_times_out_on_timer_f(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    ends = Ends()
    options = proxied("OPTIONS", branch="z9hG4bKrecord3")
    async with trio.open_nursery() as nursery:
        layer = await serving(nursery, transport)
        start = trio.current_time()
        layer.start_client(options, NEXT_HOP, on_response=ends.on_response, on_end=ends.on_end)
        await trio.sleep_until(start + 40.0)
        nursery.cancel_scope.cancel()
    # §17.1.2.2: doubling from T1, capped at T2, until Timer F (64*T1) says: no answer.
    sent = [round(at - start, 2) for at in transport.times(f"OPTIONS {options.uri_raw} SIP/2.0")]
    expected = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert sent == pytest.approx(expected, abs=TIMER_SLACK)
    ((ended, failure),) = ends.ends
    assert isinstance(failure, TransactionTimeout)
    assert ended - start == pytest.approx(32.0, abs=TIMER_SLACK)
    assert layer.statistics().timeouts == 1


async def test_a_held_server_transaction_reads_its_messages_again_from_the_bytes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()

    async def on_request(st: ServerTransaction) -> None:
        st.respond_now(response(st.request, 200))

    bye = request("BYE")
    async with trio.open_nursery() as nursery:
        layer = await serving(nursery, transport, on_request)
        layer.receive(inbound(bye))
        await trio.sleep(0.1)
        (st,) = layer.server_transactions()
        assert st.task is None  # held: its task has ended, its parsed messages are let go
        # ... and read again from the bytes when asked for (the management interface).
        assert bytes(st.request) == bytes(bye)
        assert st.inbound.source == PEER
        assert st.inbound.local == LOCAL
        final = st.final_response
        assert final is not None
        assert final.status == 200
        last = st.last_response
        assert last is not None
        assert bytes(last) == bytes(final)
        with pytest.raises(AttributeError, match="no attribute 'nursery'"):
            st.nursery  # noqa: B018 - the attribute access is what is tested
        nursery.cancel_scope.cancel()
