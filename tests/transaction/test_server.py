"""Server transactions (RFC 3261 §17.2) against a recording transport, on autojump time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from tests.support.transaction import (
    LOCAL,
    PEER_TCP,
    FakeTransport,
    ack_for,
    cancel_for,
    inbound,
    request,
    response,
)
from triosip.transaction import (
    ServerState,
    ServerTransaction,
    TimerConfig,
    TransactionError,
    TransactionLayer,
    TransportFailure,
)
from triosip.transport import TransportError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from triosip.transport import Inbound

TRYING = "SIP/2.0 100 Trying"
RINGING = "SIP/2.0 180 Ringing"
OK = "SIP/2.0 200 OK"
BUSY = "SIP/2.0 486 Busy Here"
SERVER_ERROR = "SIP/2.0 500 Server Internal Error"


async def start_layer(
    nursery: trio.Nursery,
    transport: FakeTransport,
    on_request: Callable[[ServerTransaction], Awaitable[None]],
    strays: list[Inbound] | None = None,
    timers: TimerConfig | None = None,
) -> TransactionLayer:
    layer = TransactionLayer(
        transport,
        timers=timers or TimerConfig(),
        on_request=on_request,
        on_stray=(strays if strays is not None else []).append,
    )
    await nursery.start(layer.serve)
    return layer


def transaction_tasks(nursery: trio.Nursery) -> set[str]:
    """The names of the tasks in the layer's transactions nursery (public trio API)."""
    (serve_task,) = [t for t in nursery.child_tasks if t.name.endswith("serve")]
    (transactions,) = serve_task.child_nurseries
    return {task.name for task in transactions.child_tasks}


def state_of(st: ServerTransaction) -> ServerState:
    """The state now (a function, so that mypy does not keep an earlier narrowing)."""
    return st.state


def relative(times: list[float], start: float) -> list[float]:
    return [round(t - start, 9) for t in times]


# --- IST ---------------------------------------------------------------------------------


async def test_ist_sends_100_at_once_then_timer_g_until_the_ack_then_timer_i(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    seen: list[tuple[float, list[str]]] = []

    async def on_request(st: ServerTransaction) -> None:
        seen.append((trio.current_time(), transport.lines()))
        await st.respond(response(st.request, 486))

    invite = request()
    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        start = trio.current_time()
        layer.receive(inbound(invite))
        (st,) = layer.server_transactions()
        assert st.name == "IST INVITE z9hG4bK776asdhds"
        await trio.sleep(0.1)
        assert (transaction_tasks(nursery), layer.server_transactions()) == (set(), [st])  # held
        assert state_of(st) is ServerState.COMPLETED
        assert set(st.timer_deadlines()) == {"G", "H"}
        await trio.sleep_until(start + 5.0)
        assert st.final_response is not None
        layer.receive(inbound(ack_for(invite, st.final_response)))
        assert state_of(st) is ServerState.CONFIRMED
        assert set(st.timer_deadlines()) == {"I"}
        assert st.timer_deadlines()["I"] - start == pytest.approx(10.0)  # Timer I = T4
        await trio.sleep_until(start + 9.9)
        assert (transaction_tasks(nursery), layer.server_transactions()) == (set(), [st])  # held
        await trio.sleep_until(start + 10.01)
        assert state_of(st) is ServerState.TERMINATED
        assert transaction_tasks(nursery) == set()  # its task and its nursery are gone
        assert layer.server_transactions() == []
        nursery.cancel_scope.cancel()
    # §17.2.1: the 100 goes before the route runs.
    assert seen == [(start, [TRYING])]
    assert transport.lines()[0] == TRYING
    # Timer G: T1, then doubling, capped at T2, until the ACK came at 5 s.
    assert relative(transport.times(BUSY), start) == [0, 0.5, 1.5, 3.5]
    assert all(sent.destination.port == 5070 for sent in transport.sent)


async def test_ist_timer_g_caps_at_t2_and_timer_h_ends_it_without_ack(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()

    async def on_request(st: ServerTransaction) -> None:
        await st.respond(response(st.request, 486))

    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        start = trio.current_time()
        layer.receive(inbound(request()))
        (st,) = layer.server_transactions()
        await trio.sleep_until(start + 31.9)
        assert state_of(st) is ServerState.COMPLETED
        await trio.sleep_until(start + 32.01)
        assert state_of(st) is ServerState.TERMINATED
        assert transaction_tasks(nursery) == set()
        nursery.cancel_scope.cancel()
    assert relative(transport.times(BUSY), start) == [
        0,
        0.5,
        1.5,
        3.5,
        7.5,
        11.5,
        15.5,
        19.5,
        23.5,
        27.5,
        31.5,
    ]
    assert layer.statistics().timeouts == 1


async def test_ist_retransmitted_invite_gets_the_last_response_and_never_reruns_the_route(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    runs: list[float] = []

    async def on_request(st: ServerTransaction) -> None:
        runs.append(trio.current_time())
        await trio.sleep(3.0)
        await st.respond(response(st.request, 486))

    invite = request()
    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        start = trio.current_time()
        layer.receive(inbound(invite))
        await trio.sleep(0.25)
        layer.receive(inbound(invite))  # in Proceeding: the 100 again
        await trio.sleep_until(start + 3.25)
        layer.receive(inbound(invite))  # in Completed: the 486 again
        (st,) = layer.server_transactions()
        assert st.retransmissions_absorbed == 2
        nursery.cancel_scope.cancel()
    assert runs == [start]
    assert relative(transport.times(TRYING), start) == [0, 0.25]
    assert relative(transport.times(BUSY), start)[:2] == [3.0, 3.25]
    assert layer.statistics().retransmissions_absorbed == 2


async def test_ist_2xx_goes_to_accepted_absorbs_invites_and_passes_acks_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    strays: list[Inbound] = []

    async def on_request(st: ServerTransaction) -> None:
        await st.respond(response(st.request, 180))
        await st.respond(response(st.request, 200))

    invite = request()
    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request, strays)
        start = trio.current_time()
        layer.receive(inbound(invite))
        (st,) = layer.server_transactions()
        await trio.sleep(1.0)
        assert state_of(st) is ServerState.ACCEPTED
        assert set(st.timer_deadlines()) == {"L"}
        sent = len(transport.sent)
        layer.receive(inbound(invite))  # RFC 6026: absorbed, nothing sent
        assert len(transport.sent) == sent
        # A 2xx retransmitted from downstream is passed again and sent.
        await st.respond(response(st.request, 200))
        assert transport.lines()[-1] == OK
        # The ACK of a 2xx: a new transaction (new branch) matches nothing...
        ok = st.final_response
        assert ok is not None
        end_to_end = ack_for(invite, ok, branch="z9hG4bKack2xx")
        layer.receive(inbound(end_to_end))
        # ... and one that reuses the INVITE's branch is passed up in Accepted (RFC 6026).
        same_branch = ack_for(invite, ok)
        layer.receive(inbound(same_branch))
        assert state_of(st) is ServerState.ACCEPTED
        # A second final of another class is the TU's bug: refused, nothing changes.
        with pytest.raises(TransactionError):
            await st.respond(response(st.request, 486))
        assert state_of(st) is ServerState.ACCEPTED
        await trio.sleep_until(start + 31.9)
        assert (transaction_tasks(nursery), layer.server_transactions()) == (set(), [st])  # held
        await trio.sleep_until(start + 32.01)  # Timer L = 64*T1
        assert transaction_tasks(nursery) == set()
        nursery.cancel_scope.cancel()
    assert [i.message for i in strays] == [end_to_end, same_branch]
    assert transport.lines() == [TRYING, RINGING, OK, OK]


async def test_ist_over_tcp_has_no_timer_g_and_ends_on_the_ack(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()

    async def on_request(st: ServerTransaction) -> None:
        await st.respond(response(st.request, 486))

    invite = request(transport="TCP")
    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        start = trio.current_time()
        layer.receive(inbound(invite, PEER_TCP))
        (st,) = layer.server_transactions()
        assert st.reliable
        await trio.sleep(2.0)
        assert set(st.timer_deadlines()) == {"H"}
        assert st.final_response is not None
        layer.receive(inbound(ack_for(invite, st.final_response), PEER_TCP))
        await trio.sleep(0.001)
        assert state_of(st) is ServerState.TERMINATED  # Timer I = 0 on TCP
        assert transaction_tasks(nursery) == set()
        nursery.cancel_scope.cancel()
    assert relative(transport.times(BUSY), start) == [0]
    assert all(sent.destination == PEER_TCP and not sent.nowait for sent in transport.sent)


# --- NIST --------------------------------------------------------------------------------


async def test_nist_absorbs_in_trying_and_resends_the_last_response_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    runs: list[float] = []

    async def on_request(st: ServerTransaction) -> None:
        runs.append(trio.current_time())
        await trio.sleep(1.0)
        await st.respond(response(st.request, 180))
        await trio.sleep(1.0)
        await st.respond(response(st.request, 200))

    bye = request("BYE", to_tag="a6c85cf")
    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        start = trio.current_time()
        layer.receive(inbound(bye))
        (st,) = layer.server_transactions()
        assert st.name == "NIST BYE z9hG4bK776asdhds"
        await trio.sleep(0.5)
        layer.receive(inbound(bye))  # Trying: discarded silently (§17.2.2)
        assert transport.sent == []
        await trio.sleep(1.0)
        assert state_of(st) is ServerState.PROCEEDING
        layer.receive(inbound(bye))  # Proceeding: the 180 again
        await trio.sleep(1.0)
        assert state_of(st) is ServerState.COMPLETED
        assert st.timer_deadlines()["J"] - start == pytest.approx(34.0)
        layer.receive(inbound(bye))  # Completed: the 200 again
        await trio.sleep_until(start + 33.9)
        assert (transaction_tasks(nursery), layer.server_transactions()) == (set(), [st])  # held
        await trio.sleep_until(start + 34.01)  # Timer J = 64*T1 after the final
        assert transaction_tasks(nursery) == set()
        nursery.cancel_scope.cancel()
    assert runs == [start]
    assert transport.lines() == [RINGING, RINGING, OK, OK]
    assert relative([s.at for s in transport.sent], start) == [1.0, 1.5, 2.0, 2.5]
    assert st.retransmissions_absorbed == 3


async def test_nist_over_tcp_ends_with_its_final(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()

    async def on_request(st: ServerTransaction) -> None:
        await trio.sleep(1.0)
        await st.respond(response(st.request, 200))

    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        start = trio.current_time()
        layer.receive(inbound(request("OPTIONS", transport="TCP"), PEER_TCP))
        await trio.sleep(1.001)
        assert transaction_tasks(nursery) == set()  # Timer J = 0 on TCP
        nursery.cancel_scope.cancel()
    assert relative(transport.times(OK), start) == [1.0]


# --- the transaction user --------------------------------------------------------------------


async def test_on_request_that_raises_gets_a_500_and_the_layer_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()

    async def on_request(st: ServerTransaction) -> None:
        if st.request.method == "OPTIONS":
            raise RuntimeError("route bug")
        await st.respond(response(st.request, 200))

    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        layer.receive(inbound(request("OPTIONS")))
        await trio.sleep(0.1)
        layer.receive(inbound(request("MESSAGE", branch="z9hG4bKnext")))
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert transport.lines() == [SERVER_ERROR, OK]
    assert layer.statistics().handler_errors == 1


async def test_a_failing_task_in_the_transaction_nursery_gets_a_500(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()

    async def branch(st: ServerTransaction) -> None:
        await trio.sleep(2.0)
        raise ValueError("proxy bug")

    async def on_request(st: ServerTransaction) -> None:
        st.nursery.start_soon(branch, st)

    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        start = trio.current_time()
        layer.receive(inbound(request()))
        await trio.sleep(3.0)
        (st,) = layer.server_transactions()
        assert state_of(st) is ServerState.COMPLETED
        layer.receive(inbound(request("OPTIONS", branch="z9hG4bKnext")))  # the layer is alive
        nursery.cancel_scope.cancel()
    assert relative(transport.times(SERVER_ERROR), start)[:2] == [2.0, 2.5]
    assert layer.statistics().handler_errors == 1


async def test_unanswered_request_with_nothing_running_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()

    async def on_request(st: ServerTransaction) -> None:
        return None  # the route dropped it

    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        layer.receive(inbound(request()))
        layer.receive(inbound(request("OPTIONS", branch="z9hG4bKnext")))
        await trio.sleep(0.001)
        assert transaction_tasks(nursery) == set()
        nursery.cancel_scope.cancel()
    assert transport.lines() == [TRYING]
    assert layer.statistics().dropped == 2


async def test_a_branch_task_answers_after_on_request_returned(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()

    async def answer_later(st: ServerTransaction) -> None:
        await trio.sleep(3.0)
        await st.respond(response(st.request, 486))
        await trio.sleep(1.0)  # the branch lingers (as an ICT in Timer D would)

    async def on_request(st: ServerTransaction) -> None:
        st.nursery.start_soon(answer_later, st, name=f"branch of {st.name}")

    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        start = trio.current_time()
        invite = request()
        layer.receive(inbound(invite))
        (st,) = layer.server_transactions()
        await trio.sleep(1.0)
        assert {t.name for t in st.nursery.child_tasks} == {f"branch of {st.name}"}
        await trio.sleep_until(start + 4.2)
        assert st.final_response is not None
        layer.receive(inbound(ack_for(invite, st.final_response)))
        await trio.sleep_until(start + 9.1)
        assert (transaction_tasks(nursery), layer.server_transactions()) == (set(), [st])  # held
        await trio.sleep_until(start + 9.21)  # Timer I: 4.2 + T4
        assert transaction_tasks(nursery) == set()
        nursery.cancel_scope.cancel()
    # Timer G ran in the transaction's task while the branch task was alive.
    assert relative(transport.times(BUSY), start) == [3.0, 3.5]


async def test_branches_that_end_without_answering_are_found_by_the_watchdog(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()

    async def silent_branch() -> None:
        await trio.sleep(10.0)

    async def on_request(st: ServerTransaction) -> None:
        st.nursery.start_soon(silent_branch)

    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        start = trio.current_time()
        layer.receive(inbound(request()))
        await trio.sleep_until(start + 31.9)
        assert len(transaction_tasks(nursery)) == 1
        await trio.sleep_until(start + 32.01)  # checked every 64*T1
        assert transaction_tasks(nursery) == set()
        nursery.cancel_scope.cancel()
    assert layer.statistics().dropped == 1


async def test_second_final_and_late_responses_are_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    errors: list[str] = []

    async def on_request(st: ServerTransaction) -> None:
        await st.respond(response(st.request, 486))
        for status in (200, 603, 180):
            try:
                await st.respond(response(st.request, status))
            except TransactionError as exc:
                errors.append(str(exc))
        assert state_of(st) is ServerState.COMPLETED

    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        layer.receive(inbound(request()))
        await trio.sleep(0.1)
        (st,) = layer.server_transactions()
        nursery.cancel_scope.cancel()
    assert len(errors) == 3
    assert transport.lines() == [TRYING, BUSY]
    with pytest.raises(TransactionError):
        await st.respond(response(st.request, 486))  # after TERMINATED


async def test_cancel_finds_its_invite(autojump_clock: trio.testing.MockClock) -> None:
    transport = FakeTransport()
    found: list[ServerTransaction | None] = []
    layer: TransactionLayer

    async def on_request(st: ServerTransaction) -> None:
        if st.request.method == "CANCEL":
            invite_st = layer.find_invite(st.request)
            found.append(invite_st)
            await st.respond(response(st.request, 200))
            if invite_st is not None:
                await invite_st.respond(response(invite_st.request, 487))
        else:
            await trio.sleep_forever()  # ringing

    invite = request()
    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        layer.receive(inbound(invite))
        await trio.sleep(1.0)
        (ist,) = layer.server_transactions()
        layer.receive(inbound(cancel_for(invite)))
        await trio.sleep(0.1)
        assert state_of(ist) is ServerState.COMPLETED
        # No INVITE matches this one: the proxy answers it 481.
        assert layer.find_invite(cancel_for(request(branch="z9hG4bKunknown"))) is None
        nursery.cancel_scope.cancel()
    assert found == [ist]
    assert "SIP/2.0 487 Request Terminated" in transport.lines()


async def test_rfc2543_requests_match_without_a_branch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    runs: list[str] = []
    layer: TransactionLayer
    strays: list[Inbound] = []

    async def on_request(st: ServerTransaction) -> None:
        runs.append(st.request.method)
        if st.request.method == "CANCEL":
            assert layer.find_invite(st.request) is not None
            await st.respond(response(st.request, 200))
        else:
            await st.respond(response(st.request, 486, to_tag="uas-tag"))

    invite = request(branch=None)
    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request, strays)
        layer.receive(inbound(invite))
        (st,) = layer.server_transactions()
        assert st.name.startswith("IST INVITE rfc2543-")
        assert st.rfc2543
        await trio.sleep(0.1)
        layer.receive(inbound(invite))  # a retransmission: the 486 again
        layer.receive(inbound(cancel_for(invite)))
        await trio.sleep(0.1)
        assert st.final_response is not None
        # §17.2.3: the ACK's To tag must be the response's.
        wrong_tag = ack_for(invite, response(invite, 486, to_tag="other"))
        layer.receive(inbound(wrong_tag))
        assert state_of(st) is ServerState.COMPLETED
        layer.receive(inbound(ack_for(invite, st.final_response)))
        assert state_of(st) is ServerState.CONFIRMED
        nursery.cancel_scope.cancel()
    assert runs == ["INVITE", "CANCEL"]
    assert [i.message for i in strays] == [wrong_tag]
    assert transport.times(BUSY)[1] == pytest.approx(0.1)


async def test_stray_ack_and_response_go_to_on_stray(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    strays: list[Inbound] = []

    async def on_request(st: ServerTransaction) -> None:
        raise AssertionError("an ACK never creates a transaction")

    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request, strays)
        invite = request()
        ack = ack_for(invite, response(invite, 200))
        ok = response(request("OPTIONS", sent_by="192.0.2.1:5060"), 200)
        layer.receive(inbound(ack))
        layer.receive(inbound(ok))
        await trio.sleep(0.1)
        assert transaction_tasks(nursery) == set()
        nursery.cancel_scope.cancel()
    assert [i.message for i in strays] == [ack, ok]
    assert transport.sent == []
    # The ACK of a 2xx is the TU's to relay, not a stray (it used to be counted as one).
    assert layer.statistics().strays == 1


async def test_requests_before_serve_are_dropped() -> None:
    async def on_request(st: ServerTransaction) -> None:
        raise AssertionError("not serving")

    layer = TransactionLayer(FakeTransport(), on_request=on_request, on_stray=lambda i: None)
    layer.receive(inbound(request()))
    assert layer.server_transactions() == []
    assert layer.statistics().dropped == 1


async def test_cancelling_serve_cancels_every_transaction(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    cancelled: list[str] = []

    async def on_request(st: ServerTransaction) -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(st.name)
            raise

    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        layer.receive(inbound(request()))
        layer.receive(inbound(request("OPTIONS", branch="z9hG4bKnext")))
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert sorted(cancelled) == ["IST INVITE z9hG4bK776asdhds", "NIST OPTIONS z9hG4bKnext"]
    assert layer.server_transactions() == []
    assert layer.statistics().server_active == 0


async def test_timer_g_runs_while_on_request_is_still_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A proxy's on_request may forward the final and wait for its branches to end (an ICT
    # stays 32 s in Completed): Timer G must not wait for it.
    transport = FakeTransport()
    returned: list[float] = []

    async def on_request(st: ServerTransaction) -> None:
        await st.respond(response(st.request, 486))
        await trio.sleep(20.0)
        returned.append(trio.current_time())

    invite = request()
    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        start = trio.current_time()
        layer.receive(inbound(invite))
        (st,) = layer.server_transactions()
        await trio.sleep(1.0)
        assert {t.name for t in st.nursery.child_tasks} == {f"{st.name} timers"}
        await trio.sleep_until(start + 5.0)
        assert st.final_response is not None
        layer.receive(inbound(ack_for(invite, st.final_response)))
        await trio.sleep_until(start + 10.01)  # Timer I ended the machine...
        assert state_of(st) is ServerState.TERMINATED
        assert st.nursery.child_tasks == frozenset()
        assert transaction_tasks(nursery) == {st.name}  # ...the route still runs
        await trio.sleep_until(start + 20.01)
        assert transaction_tasks(nursery) == set()
        nursery.cancel_scope.cancel()
    assert relative(transport.times(BUSY), start) == [0, 0.5, 1.5, 3.5]
    assert returned == [pytest.approx(start + 20.0)]


async def test_a_transport_failure_is_raised_from_respond_and_ends_the_transaction(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport()
    failures: list[TransportFailure] = []

    async def on_request(st: ServerTransaction) -> None:
        transport.fail = True  # the TCP connection broke, and no new one can be opened
        try:
            await st.respond(response(st.request, 200))
        except TransportFailure as exc:
            failures.append(exc)
        assert state_of(st) is ServerState.TERMINATED  # RFC 3261 §17.2.4

    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        layer.receive(inbound(request("OPTIONS", transport="TCP"), PEER_TCP))
        await trio.sleep(0.001)
        assert transaction_tasks(nursery) == set()
        nursery.cancel_scope.cancel()
    assert len(failures) == 1
    assert isinstance(failures[0].__cause__, TransportError)
    assert transport.sent == []


async def test_a_resend_that_must_be_awaited_does_not_wait_for_on_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Over TCP a retransmitted request is unusual, but its answer must still go out while
    # the route runs: the loop runs as the "timers" child task for it.
    transport = FakeTransport()

    async def on_request(st: ServerTransaction) -> None:
        await st.respond(response(st.request, 180))
        await trio.sleep(10.0)
        await st.respond(response(st.request, 200))

    message = request("MESSAGE", transport="TCP")
    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        start = trio.current_time()
        layer.receive(inbound(message, PEER_TCP))
        await trio.sleep(1.0)
        layer.receive(inbound(message, PEER_TCP))
        await trio.sleep(0.001)
        (st,) = layer.server_transactions()
        assert {t.name for t in st.nursery.child_tasks} == {f"{st.name} timers"}
        await trio.sleep_until(start + 10.001)  # Timer J = 0 on TCP
        assert transaction_tasks(nursery) == set()
        nursery.cancel_scope.cancel()
    assert relative([s.at for s in transport.sent], start) == [0.0, 1.0, 10.0]
    assert transport.lines() == [RINGING, RINGING, OK]


async def test_timer_g_waits_for_a_full_udp_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = FakeTransport(nowait_ok=False)  # send_nowait would block: send() is awaited

    async def on_request(st: ServerTransaction) -> None:
        await st.respond(response(st.request, 486))

    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        start = trio.current_time()
        invite = request()
        layer.receive(inbound(invite))
        await trio.sleep(2.0)
        layer.receive(inbound(invite))  # a retransmission, answered through the loop
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert relative(transport.times(BUSY), start) == [0, 0.5, 1.5, 2.0]
    assert not any(sent.nowait for sent in transport.sent)
    assert all(sent.local == LOCAL for sent in transport.sent)  # RFC 3581 §4


async def test_the_watchdog_spares_a_route_that_is_still_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The timers task runs early (a TCP resend) while the route takes 100 s to answer.
    transport = FakeTransport()

    async def on_request(st: ServerTransaction) -> None:
        await st.respond(response(st.request, 100, to_tag=None))
        await trio.sleep(100.0)
        await st.respond(response(st.request, 200))

    message = request("OPTIONS", transport="TCP")
    async with trio.open_nursery() as nursery:
        layer = await start_layer(nursery, transport, on_request)
        start = trio.current_time()
        layer.receive(inbound(message, PEER_TCP))
        await trio.sleep(1.0)
        layer.receive(inbound(message, PEER_TCP))
        await trio.sleep_until(start + 100.001)
        assert transaction_tasks(nursery) == set()
        nursery.cancel_scope.cancel()
    assert transport.lines() == [TRYING, TRYING, OK]
    assert layer.statistics().dropped == 0
