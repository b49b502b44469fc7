"""Client transactions (RFC 3261 §17.1) against a recording transport, on autojump time."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from tests.support.transaction import (
    NEXT_HOP,
    NEXT_HOP_TCP,
    FakeTransport,
    inbound,
    proxied,
    request,
    response,
)
from triosip.sip import Request, Response
from triosip.transaction import (
    ClientState,
    ClientTransaction,
    TimerConfig,
    TransactionError,
    TransactionLayer,
    TransactionStatistics,
    TransactionTimeout,
    TransportFailure,
)
from triosip.transaction._port import Counted

if TYPE_CHECKING:
    from triosip.transport import Address, Inbound

INVITE_LINE = "INVITE sip:bob@biloxi.example.com SIP/2.0"
OPTIONS_LINE = "OPTIONS sip:bob@biloxi.example.com SIP/2.0"
ACK_LINE = "ACK sip:bob@biloxi.example.com SIP/2.0"


async def _never(server: object) -> None:
    raise AssertionError("no server transaction in these tests")


class Branch:
    """Runs one client transaction as a proxy branch task would, and records what it saw."""

    def __init__(self, layer: TransactionLayer) -> None:
        self.layer = layer
        self.responses: list[tuple[float, int, ClientState]] = []
        self.error: BaseException | None = None
        self.ended_at: float | None = None

    def on_response(self, client: ClientTransaction, resp: Response) -> None:
        self.responses.append((trio.current_time(), resp.status, client.state))

    async def run(
        self,
        req: Request,
        destination: Address,
        *,
        task_status: trio.TaskStatus[ClientTransaction] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await self.layer.run_client(
                req, destination, on_response=self.on_response, task_status=task_status
            )
        except TransactionError as exc:
            self.error = exc
        self.ended_at = trio.current_time()

    def statuses(self) -> list[int]:
        return [status for _, status, _ in self.responses]


@pytest.fixture
def transport() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
def strays() -> list[Inbound]:
    return []


@pytest.fixture
def layer(transport: FakeTransport, strays: list[Inbound]) -> TransactionLayer:
    return TransactionLayer(transport, on_request=_never, on_stray=strays.append)


def state_of(client: ClientTransaction) -> ClientState:
    """The state now (a function, so that mypy does not keep an earlier narrowing)."""
    return client.state


def relative(times: list[float], start: float) -> list[float]:
    return [round(t - start, 9) for t in times]


# --- ICT ---------------------------------------------------------------------------------


async def test_ict_timer_a_doubles_without_cap_and_timer_b_fires_at_64_t1(
    autojump_clock: trio.testing.MockClock, layer: TransactionLayer, transport: FakeTransport
) -> None:
    start = trio.current_time()
    with pytest.raises(TransactionTimeout):
        await layer.run_client(
            proxied(branch=layer.new_branch()), NEXT_HOP, on_response=lambda c, r: None
        )
    assert trio.current_time() - start == pytest.approx(32.0)
    # §17.1.1.2: T1, 2*T1, 4*T1, ... intervals; 8 and 16 s show Timer A is not capped at T2.
    assert relative(transport.times(INVITE_LINE), start) == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(sent.nowait for sent in transport.sent)
    assert layer.statistics().timeouts == 1
    assert layer.client_transactions() == []


async def test_the_layer_counts_what_its_transactions_report_through_their_port(
    autojump_clock: trio.testing.MockClock, layer: TransactionLayer, transport: FakeTransport
) -> None:
    # Every event a transaction counts is one of the layer's statistics.
    assert {event.value for event in Counted} <= {f.name for f in fields(TransactionStatistics)}
    with pytest.raises(TransactionTimeout):
        await layer.run_client(
            proxied(branch=layer.new_branch()), NEXT_HOP, on_response=lambda c, r: None
        )
    statistics = layer.statistics()
    # Timer A: six retransmissions in 32 s (see above); then Timer B.
    assert (statistics.retransmissions_sent, statistics.timeouts) == (6, 1)
    assert (statistics.ict_total, statistics.client_active) == (1, 0)


async def test_ict_timers_follow_t1(
    autojump_clock: trio.testing.MockClock, transport: FakeTransport
) -> None:
    layer = TransactionLayer(
        transport, timers=TimerConfig(t1=0.1), on_request=_never, on_stray=lambda i: None
    )
    start = trio.current_time()
    with pytest.raises(TransactionTimeout):
        await layer.run_client(
            proxied(branch=layer.new_branch()), NEXT_HOP, on_response=lambda c, r: None
        )
    assert trio.current_time() - start == pytest.approx(6.4)
    assert relative(transport.times(INVITE_LINE), start) == pytest.approx(
        [0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3]
    )


async def test_ict_over_tcp_sends_once_and_times_out(
    autojump_clock: trio.testing.MockClock, layer: TransactionLayer, transport: FakeTransport
) -> None:
    start = trio.current_time()
    with pytest.raises(TransactionTimeout):
        await layer.run_client(
            proxied(branch=layer.new_branch(), transport="TCP"),
            NEXT_HOP_TCP,
            on_response=lambda c, r: None,
        )
    assert trio.current_time() - start == pytest.approx(32.0)
    assert relative(transport.times(INVITE_LINE), start) == [0]
    assert not transport.sent[0].nowait


async def test_ict_provisional_stops_retransmissions_and_timer_b(
    autojump_clock: trio.testing.MockClock, layer: TransactionLayer, transport: FakeTransport
) -> None:
    branch = Branch(layer)
    req = proxied(branch=layer.new_branch())
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        client = await nursery.start(branch.run, req, NEXT_HOP)
        assert state_of(client) is ClientState.CALLING
        assert set(client.timer_deadlines()) == {"A", "B"}
        await trio.sleep_until(start + 1.0)  # one retransmission at 0.5
        layer.receive(inbound(response(req, 100, to_tag=None), NEXT_HOP))
        assert state_of(client) is ClientState.PROCEEDING
        assert client.timer_deadlines() == {}
        await trio.sleep_until(start + 100.0)  # well past Timer B: it is not armed
        assert state_of(client) is ClientState.PROCEEDING
        layer.receive(inbound(response(req, 180), NEXT_HOP))
        layer.receive(inbound(response(req, 486), NEXT_HOP))
        assert state_of(client) is ClientState.COMPLETED
    assert relative(transport.times(INVITE_LINE), start) == [0, 0.5]
    assert branch.statuses() == [100, 180, 486]
    assert branch.error is None
    # §17.1.1.2: Timer D, 32 s on UDP, after the final.
    assert branch.ended_at is not None
    assert branch.ended_at - start == pytest.approx(132.0)


async def test_ict_acks_a_non_2xx_final_itself_with_the_same_branch(
    autojump_clock: trio.testing.MockClock, layer: TransactionLayer, transport: FakeTransport
) -> None:
    branch = Branch(layer)
    req = proxied(branch=layer.new_branch())
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        client = await nursery.start(branch.run, req, NEXT_HOP)
        await trio.sleep(0.2)
        final = response(req, 486, to_tag="callee-tag")
        layer.receive(inbound(final, NEXT_HOP))
        assert state_of(client) is ClientState.COMPLETED
        assert set(client.timer_deadlines()) == {"D"}
        assert client.timer_deadlines()["D"] - start == pytest.approx(32.2)
        # Retransmissions of the final are absorbed; each gets the ACK again (§17.1.1.2).
        await trio.sleep(1.0)
        layer.receive(inbound(final, NEXT_HOP))
        await trio.sleep(2.0)
        layer.receive(inbound(final, NEXT_HOP))
    assert branch.statuses() == [486]  # passed up once
    assert relative(transport.times(ACK_LINE), start) == [0.2, 1.2, 3.2]
    assert branch.ended_at is not None
    assert branch.ended_at - start == pytest.approx(32.2)
    ack = transport.sent[1].message
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.uri_raw == req.uri_raw
    # §17.1.1.3: one Via, the request's top Via (same branch); To from the response.
    assert len(ack.via) == 1
    assert ack.top_via.branch == req.top_via.branch
    assert ack.to.tag == "callee-tag"
    assert ack.from_.tag == req.from_.tag
    assert ack.call_id == req.call_id
    assert (ack.cseq.number, ack.cseq.method) == (req.cseq.number, "ACK")
    assert [str(r.uri) for r in ack.route] == [str(r.uri) for r in req.route]
    assert ack.body == b""
    assert transport.sent[1].destination == NEXT_HOP
    assert layer.statistics().retransmissions_absorbed == 2


async def test_ict_over_tcp_acks_and_ends_at_once(
    autojump_clock: trio.testing.MockClock, layer: TransactionLayer, transport: FakeTransport
) -> None:
    branch = Branch(layer)
    req = proxied(branch=layer.new_branch(), transport="TCP")
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(branch.run, req, NEXT_HOP_TCP)
        await trio.sleep(1.0)
        layer.receive(inbound(response(req, 603), NEXT_HOP_TCP))
    # Timer D is 0 on a reliable transport: the ACK is sent, then the transaction ends.
    assert branch.ended_at is not None
    assert branch.ended_at - start == pytest.approx(1.0)
    assert transport.lines() == [INVITE_LINE, ACK_LINE]
    assert branch.statuses() == [603]


async def test_ict_2xx_goes_up_and_its_retransmissions_too_in_accepted(
    autojump_clock: trio.testing.MockClock,
    layer: TransactionLayer,
    transport: FakeTransport,
    strays: list[Inbound],
) -> None:
    branch = Branch(layer)
    req = proxied(branch=layer.new_branch())
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        client = await nursery.start(branch.run, req, NEXT_HOP)
        await trio.sleep(0.3)
        ok = response(req, 200)
        layer.receive(inbound(ok, NEXT_HOP))
        assert state_of(client) is ClientState.ACCEPTED
        assert set(client.timer_deadlines()) == {"M"}
        # The UAS retransmits its 2xx (§13.3.1.4): RFC 6026 has them passed up.
        await trio.sleep(0.5)
        layer.receive(inbound(ok, NEXT_HOP))
        await trio.sleep(1.0)
        layer.receive(inbound(ok, NEXT_HOP))
    assert branch.statuses() == [200, 200, 200]
    assert [state for _, _, state in branch.responses] == [ClientState.ACCEPTED] * 3
    assert transport.lines() == [INVITE_LINE]  # the ACK of a 2xx is not the ICT's
    assert branch.ended_at is not None
    assert branch.ended_at - start == pytest.approx(32.3)  # Timer M = 64*T1
    # Once the ICT has ended, a late 2xx matches nothing: the proxy forwards it statelessly.
    layer.receive(inbound(ok, NEXT_HOP))
    assert [i.message for i in strays] == [ok]


async def test_ict_without_accepted_ends_with_its_2xx_and_leaves_retransmissions_to_strays(
    autojump_clock: trio.testing.MockClock,
    layer: TransactionLayer,
    transport: FakeTransport,
    strays: list[Inbound],
) -> None:
    ended: list[float] = []
    seen: list[tuple[int, ClientState]] = []

    async def run_branch(req: Request, *, task_status: trio.TaskStatus[ClientTransaction]) -> None:
        await layer.run_client(
            req,
            NEXT_HOP,
            on_response=lambda client, resp: seen.append((resp.status, client.state)),
            wait_in_accepted=False,
            task_status=task_status,
        )
        ended.append(trio.current_time())

    req = proxied(branch=layer.new_branch())
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(run_branch, req)
        await trio.sleep(0.3)
        ok = response(req, 200)
        layer.receive(inbound(ok, NEXT_HOP))
        await trio.sleep(0.5)
        # RFC 3261 §17.1.1.2 without RFC 6026: the 2xx ended the ICT at once (Figure 5 as
        # published); its retransmission matches nothing, and goes to the proxy as a stray.
        assert ended == [pytest.approx(start + 0.3)]
        layer.receive(inbound(ok, NEXT_HOP))
    # RFC 3261's machine: the 2xx is passed up as it enters Terminated (no Accepted).
    assert seen == [(200, ClientState.TERMINATED)]
    assert [i.message for i in strays] == [ok]
    assert transport.lines() == [INVITE_LINE]
    assert layer.client_transactions() == []


# --- NICT --------------------------------------------------------------------------------


async def test_nict_timer_e_doubles_capped_at_t2_and_timer_f_fires_at_64_t1(
    autojump_clock: trio.testing.MockClock, layer: TransactionLayer, transport: FakeTransport
) -> None:
    start = trio.current_time()
    with pytest.raises(TransactionTimeout):
        await layer.run_client(
            proxied("OPTIONS", branch=layer.new_branch()),
            NEXT_HOP,
            on_response=lambda c, r: None,
        )
    assert trio.current_time() - start == pytest.approx(32.0)
    # §17.1.2.2: 0.5, 1, 2, then 4 s (T2) between transmissions.
    expected = [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert relative(transport.times(OPTIONS_LINE), start) == expected


async def test_nict_timer_e_is_t2_in_proceeding(
    autojump_clock: trio.testing.MockClock, layer: TransactionLayer, transport: FakeTransport
) -> None:
    branch = Branch(layer)
    req = proxied("OPTIONS", branch=layer.new_branch())
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        client = await nursery.start(branch.run, req, NEXT_HOP)
        await trio.sleep(0.2)
        layer.receive(inbound(response(req, 100, to_tag=None), NEXT_HOP))
        assert state_of(client) is ClientState.PROCEEDING
        assert set(client.timer_deadlines()) == {"E", "F"}
    # The Timer E armed in Trying fires at 0.5; from then on it is reset to T2 (4 s).
    assert relative(transport.times(OPTIONS_LINE), start) == [
        0,
        0.5,
        4.5,
        8.5,
        12.5,
        16.5,
        20.5,
        24.5,
        28.5,
    ]
    assert isinstance(branch.error, TransactionTimeout)
    assert branch.ended_at is not None
    assert branch.ended_at - start == pytest.approx(32.0)  # Timer F runs on in Proceeding


async def test_nict_final_then_timer_k_absorbs_retransmissions(
    autojump_clock: trio.testing.MockClock, layer: TransactionLayer, transport: FakeTransport
) -> None:
    branch = Branch(layer)
    req = proxied("OPTIONS", branch=layer.new_branch())
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        client = await nursery.start(branch.run, req, NEXT_HOP)
        await trio.sleep(0.7)  # one retransmission at 0.5
        ok = response(req, 200)
        layer.receive(inbound(ok, NEXT_HOP))
        assert state_of(client) is ClientState.COMPLETED
        assert set(client.timer_deadlines()) == {"K"}
        await trio.sleep(1.0)
        layer.receive(inbound(ok, NEXT_HOP))
    assert branch.statuses() == [200]
    assert relative(transport.times(OPTIONS_LINE), start) == [0, 0.5]
    assert branch.error is None
    assert branch.ended_at is not None
    assert branch.ended_at - start == pytest.approx(5.7)  # Timer K = T4


async def test_nict_over_tcp_ends_with_its_final(
    autojump_clock: trio.testing.MockClock, layer: TransactionLayer, transport: FakeTransport
) -> None:
    branch = Branch(layer)
    req = proxied("OPTIONS", branch=layer.new_branch(), transport="TCP")
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(branch.run, req, NEXT_HOP_TCP)
        await trio.sleep(3.0)
        layer.receive(inbound(response(req, 404), NEXT_HOP_TCP))
    assert branch.ended_at is not None
    assert branch.ended_at - start == pytest.approx(3.0)  # Timer K = 0, no Timer E at all
    assert transport.lines() == [OPTIONS_LINE]


# --- matching, cancellation, failures -------------------------------------------------------


async def test_responses_find_their_transaction_by_branch_and_cseq_method(
    autojump_clock: trio.testing.MockClock, layer: TransactionLayer, strays: list[Inbound]
) -> None:
    invite_branch = Branch(layer)
    cancel_branch = Branch(layer)
    req = proxied(branch=layer.new_branch())
    cancel = proxied("CANCEL", branch=req.top_via.branch or "")
    async with trio.open_nursery() as nursery:
        await nursery.start(invite_branch.run, req, NEXT_HOP)
        await nursery.start(cancel_branch.run, cancel, NEXT_HOP)
        layer.receive(inbound(response(cancel, 200), NEXT_HOP))
        layer.receive(inbound(response(req, 487), NEXT_HOP))
        other = proxied(branch=layer.new_branch())
        layer.receive(inbound(response(other, 180), NEXT_HOP))
    assert cancel_branch.statuses() == [200]
    assert invite_branch.statuses() == [487]
    assert [i.message.top_via.branch for i in strays] == [other.top_via.branch]


async def test_cancelling_run_client_stops_it_at_once_and_leaves_nothing(
    autojump_clock: trio.testing.MockClock, layer: TransactionLayer, transport: FakeTransport
) -> None:
    req = proxied(branch=layer.new_branch())
    ended: list[float] = []
    scope = trio.CancelScope()

    async def branch_task(task_status: trio.TaskStatus[ClientTransaction]) -> None:
        with scope:
            try:
                await layer.run_client(
                    req, NEXT_HOP, on_response=lambda c, r: None, task_status=task_status
                )
            finally:
                ended.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        client = await nursery.start(branch_task)
        await trio.sleep(1.0)
        assert layer.client_transactions() == [client]
        # The proxy's fr timer (or a CANCEL, or shutdown) cancels the branch from outside.
        scope.cancel()
    assert trio.current_time() - start == pytest.approx(1.0)  # the nursery closed at once
    assert ended == [pytest.approx(start + 1.0)]
    assert state_of(client) is ClientState.TERMINATED
    assert layer.client_transactions() == []
    assert layer.statistics().client_active == 0
    sent = len(transport.sent)
    await trio.sleep(40.0)
    assert len(transport.sent) == sent  # nothing retransmits, no Timer B fires
    assert layer.statistics().timeouts == 0


async def test_cancelled_branch_stops_when_the_scope_is_cancelled(
    autojump_clock: trio.testing.MockClock, layer: TransactionLayer, transport: FakeTransport
) -> None:
    req = proxied(branch=layer.new_branch())
    start = trio.current_time()
    with trio.move_on_after(2.0):  # as the proxy's fr_timeout would
        await layer.run_client(req, NEXT_HOP, on_response=lambda c, r: None)
    assert trio.current_time() - start == pytest.approx(2.0)
    assert relative(transport.times(INVITE_LINE), start) == [0, 0.5, 1.5]
    assert layer.client_transactions() == []
    await trio.sleep(5.0)
    assert len(transport.times(INVITE_LINE)) == 3


async def test_transport_failure_on_first_send(
    autojump_clock: trio.testing.MockClock, layer: TransactionLayer, transport: FakeTransport
) -> None:
    transport.fail = True
    req = proxied(branch=layer.new_branch(), transport="TCP")
    with pytest.raises(TransportFailure) as info:
        await layer.run_client(req, NEXT_HOP_TCP, on_response=lambda c, r: None)
    assert info.value.__cause__ is not None
    assert layer.client_transactions() == []


async def test_transport_failure_on_a_retransmission(
    autojump_clock: trio.testing.MockClock, layer: TransactionLayer, transport: FakeTransport
) -> None:
    req = proxied("OPTIONS", branch=layer.new_branch())
    transport.nowait_ok = False  # every UDP send goes through send(), which then fails
    branch = Branch(layer)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(branch.run, req, NEXT_HOP)
        transport.fail = True
    assert isinstance(branch.error, TransportFailure)
    assert branch.ended_at is not None
    assert branch.ended_at - start == pytest.approx(0.5)


async def test_an_exception_in_on_response_is_raised_from_run_client(
    autojump_clock: trio.testing.MockClock, layer: TransactionLayer
) -> None:
    req = proxied(branch=layer.new_branch())

    def broken(client: ClientTransaction, resp: Response) -> None:
        raise KeyError("proxy bug")

    async def feed() -> None:
        await trio.sleep(1.0)
        layer.receive(inbound(response(req, 180), NEXT_HOP))

    with pytest.RaisesGroup(KeyError):  # out of the nursery that runs the feeder
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            await layer.run_client(req, NEXT_HOP, on_response=broken)
    assert layer.client_transactions() == []


async def test_a_branch_in_use_or_missing_is_refused(
    autojump_clock: trio.testing.MockClock, layer: TransactionLayer
) -> None:
    req = proxied(branch=layer.new_branch())
    async with trio.open_nursery() as nursery:
        await nursery.start(Branch(layer).run, req, NEXT_HOP)
        with pytest.raises(TransactionError, match="in use"):
            await layer.run_client(req, NEXT_HOP, on_response=lambda c, r: None)
        nursery.cancel_scope.cancel()
    with pytest.raises(TransactionError, match="no branch"):
        await layer.run_client(
            request(branch=None, sent_by="192.0.2.1:5060"),
            NEXT_HOP,
            on_response=lambda c, r: None,
        )


def test_new_branches_are_rfc3261_and_unique() -> None:
    layer = TransactionLayer(FakeTransport(), on_request=_never, on_stray=lambda i: None)
    branches = {layer.new_branch() for _ in range(1000)}
    assert len(branches) == 1000
    assert all(b.startswith("z9hG4bK") and len(b) > 7 + 8 for b in branches)
