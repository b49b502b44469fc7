"""The four machine tables: every state x input, and the rows RFC 3261 / RFC 6026 draw."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triosip.transaction._fsm import (
    ICT,
    ICT_WITHOUT_ACCEPTED,
    IST,
    NICT,
    NIST,
    Action,
    ClientInput,
    ClientState,
    Machine,
    ServerInput,
    ServerState,
    client_input_for,
    due,
    enter,
    server_input_for,
)

A = Action
CS = ClientState
CI = ClientInput
SS = ServerState
SI = ServerInput

# The ICT as RFC 3261 published it too (a 2xx ends it), for a TU that does not wait in
# RFC 6026's Accepted.
MACHINES: list[Machine[Any, Any]] = [ICT, ICT_WITHOUT_ACCEPTED, NICT, IST, NIST]

# Which timer each START/DOUBLE/RESET action arms.
TIMER_OF_ACTION = {
    A.START_TIMER_A: CI.TIMER_A,
    A.DOUBLE_TIMER_A: CI.TIMER_A,
    A.START_TIMER_B: CI.TIMER_B,
    A.START_TIMER_D: CI.TIMER_D,
    A.START_TIMER_E: CI.TIMER_E,
    A.DOUBLE_TIMER_E: CI.TIMER_E,
    A.RESET_TIMER_E_T2: CI.TIMER_E,
    A.START_TIMER_F: CI.TIMER_F,
    A.START_TIMER_K: CI.TIMER_K,
    A.START_TIMER_M: CI.TIMER_M,
    A.START_TIMER_G: SI.TIMER_G,
    A.DOUBLE_TIMER_G: SI.TIMER_G,
    A.START_TIMER_H: SI.TIMER_H,
    A.START_TIMER_I: SI.TIMER_I,
    A.START_TIMER_J: SI.TIMER_J,
    A.START_TIMER_L: SI.TIMER_L,
}


def inputs_of(machine: Machine[Any, Any]) -> list[Any]:
    return list(CI) if isinstance(machine.start.next_state, ClientState) else list(SI)


def all_states_of(machine: Machine[Any, Any]) -> list[Any]:
    if isinstance(machine.start.next_state, ClientState):
        return list(ClientState)
    return list(ServerState)


def machine_state_input() -> st.SearchStrategy[tuple[Machine[Any, Any], Any, Any]]:
    return st.sampled_from(MACHINES).flatmap(
        lambda m: st.tuples(
            st.just(m), st.sampled_from(all_states_of(m)), st.sampled_from(inputs_of(m))
        )
    )


@given(machine_state_input())
def test_every_state_and_input_has_a_defined_outcome(case: tuple[Any, Any, Any]) -> None:
    machine, state, event = case
    transition = machine.step(state, event)
    if (state, event) in machine.table:
        assert transition is machine.table[(state, event)]
        assert transition.next_state in machine.states
        assert A.PROTOCOL_ERROR not in transition.actions
    else:
        # A pair missing from the table is a protocol error: TERMINATED.
        assert transition.actions == (A.PROTOCOL_ERROR,)
        assert transition.next_state is machine.terminated


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_terminated_is_final(machine: Machine[Any, Any]) -> None:
    assert not [pair for pair in machine.table if pair[0] is machine.terminated]
    assert machine.timers[machine.terminated] == frozenset()


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_every_armed_timer_has_its_row(machine: Machine[Any, Any]) -> None:
    # A timer kept armed in a state must never fire into a protocol error.
    for state, timers in machine.timers.items():
        for timer in timers:
            assert (state, timer) in machine.table, (machine.name, state, timer)


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_timers_are_armed_only_where_they_are_kept(machine: Machine[Any, Any]) -> None:
    for transition in [machine.start, *machine.table.values()]:
        for action in transition.actions:
            if action in TIMER_OF_ACTION:
                assert TIMER_OF_ACTION[action] in machine.timers[transition.next_state]


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_the_timers_table_covers_every_state(machine: Machine[Any, Any]) -> None:
    assert set(machine.timers) == set(machine.states)


@given(
    st.sampled_from(MACHINES).flatmap(
        lambda m: st.tuples(st.just(m), st.lists(st.sampled_from(inputs_of(m)), max_size=30))
    )
)
def test_any_input_sequence_stays_in_the_machine(case: tuple[Any, list[Any]]) -> None:
    machine, events = case
    state = machine.start.next_state
    for event in events:
        was_terminated = state is machine.terminated
        state = machine.step(state, event).next_state
        assert state in machine.states
        if was_terminated:
            assert state is machine.terminated


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_every_state_can_terminate(machine: Machine[Any, Any]) -> None:
    can_end = {machine.terminated}
    changed = True
    while changed:
        changed = False
        for (state, _), transition in machine.table.items():
            if state not in can_end and transition.next_state in can_end:
                can_end.add(state)
                changed = True
    assert can_end == set(machine.states)


# (machine, state, input, actions, next state): the arrows of RFC 3261 Figures 5-8 and of
# RFC 6026 Figures 5 and 7, quoted.
RFC_ROWS: list[tuple[Machine[Any, Any], Any, Any, tuple[Action, ...], Any]] = [
    # Figure 5 (ICT)
    (ICT, CS.CALLING, CI.TIMER_A, (A.RETRANSMIT_REQUEST, A.DOUBLE_TIMER_A), CS.CALLING),
    (ICT, CS.CALLING, CI.TIMER_B, (A.INFORM_TU_TIMEOUT,), CS.TERMINATED),
    (ICT, CS.CALLING, CI.TRANSPORT_ERROR, (A.INFORM_TU_TRANSPORT_ERROR,), CS.TERMINATED),
    (ICT, CS.CALLING, CI.RESPONSE_1XX, (A.PASS_RESPONSE,), CS.PROCEEDING),
    (
        ICT,
        CS.CALLING,
        CI.RESPONSE_300_699,
        (A.SEND_ACK, A.PASS_RESPONSE, A.START_TIMER_D),
        CS.COMPLETED,
    ),
    (ICT, CS.PROCEEDING, CI.RESPONSE_1XX, (A.PASS_RESPONSE,), CS.PROCEEDING),
    (ICT, CS.COMPLETED, CI.RESPONSE_300_699, (A.SEND_ACK,), CS.COMPLETED),
    (ICT, CS.COMPLETED, CI.TIMER_D, (), CS.TERMINATED),
    # RFC 6026 Figure 5: 2xx goes to Accepted, Timer M ends it.
    (ICT, CS.CALLING, CI.RESPONSE_2XX, (A.PASS_RESPONSE, A.START_TIMER_M), CS.ACCEPTED),
    (ICT, CS.PROCEEDING, CI.RESPONSE_2XX, (A.PASS_RESPONSE, A.START_TIMER_M), CS.ACCEPTED),
    (ICT, CS.ACCEPTED, CI.RESPONSE_2XX, (A.PASS_RESPONSE,), CS.ACCEPTED),
    (ICT, CS.ACCEPTED, CI.TIMER_M, (), CS.TERMINATED),
    # Figure 5 as RFC 3261 published it: "2xx / 2xx to TU" ends the transaction.
    (ICT_WITHOUT_ACCEPTED, CS.CALLING, CI.RESPONSE_2XX, (A.PASS_RESPONSE,), CS.TERMINATED),
    (ICT_WITHOUT_ACCEPTED, CS.PROCEEDING, CI.RESPONSE_2XX, (A.PASS_RESPONSE,), CS.TERMINATED),
    # Figure 6 (NICT)
    (NICT, CS.TRYING, CI.TIMER_E, (A.RETRANSMIT_REQUEST, A.DOUBLE_TIMER_E), CS.TRYING),
    (NICT, CS.TRYING, CI.TIMER_F, (A.INFORM_TU_TIMEOUT,), CS.TERMINATED),
    (NICT, CS.TRYING, CI.RESPONSE_1XX, (A.PASS_RESPONSE,), CS.PROCEEDING),
    (NICT, CS.TRYING, CI.RESPONSE_2XX, (A.PASS_RESPONSE, A.START_TIMER_K), CS.COMPLETED),
    (
        NICT,
        CS.PROCEEDING,
        CI.TIMER_E,
        (A.RETRANSMIT_REQUEST, A.RESET_TIMER_E_T2),
        CS.PROCEEDING,
    ),
    (NICT, CS.PROCEEDING, CI.TIMER_F, (A.INFORM_TU_TIMEOUT,), CS.TERMINATED),
    (
        NICT,
        CS.PROCEEDING,
        CI.RESPONSE_300_699,
        (A.PASS_RESPONSE, A.START_TIMER_K),
        CS.COMPLETED,
    ),
    (NICT, CS.COMPLETED, CI.RESPONSE_2XX, (), CS.COMPLETED),
    (NICT, CS.COMPLETED, CI.TIMER_K, (), CS.TERMINATED),
    # Figure 7 (IST)
    (IST, SS.PROCEEDING, SI.REQUEST, (A.RESEND_RESPONSE,), SS.PROCEEDING),
    (IST, SS.PROCEEDING, SI.TU_1XX, (A.SEND_RESPONSE,), SS.PROCEEDING),
    (
        IST,
        SS.PROCEEDING,
        SI.TU_300_699,
        (A.SEND_RESPONSE, A.START_TIMER_G, A.START_TIMER_H),
        SS.COMPLETED,
    ),
    (IST, SS.PROCEEDING, SI.TRANSPORT_ERROR, (A.INFORM_TU_TRANSPORT_ERROR,), SS.TERMINATED),
    (IST, SS.COMPLETED, SI.REQUEST, (A.RESEND_RESPONSE,), SS.COMPLETED),
    (IST, SS.COMPLETED, SI.TIMER_G, (A.RESEND_RESPONSE, A.DOUBLE_TIMER_G), SS.COMPLETED),
    (IST, SS.COMPLETED, SI.ACK, (A.START_TIMER_I,), SS.CONFIRMED),
    (IST, SS.COMPLETED, SI.TIMER_H, (A.INFORM_TU_TIMEOUT,), SS.TERMINATED),
    (IST, SS.CONFIRMED, SI.ACK, (), SS.CONFIRMED),
    (IST, SS.CONFIRMED, SI.TIMER_I, (), SS.TERMINATED),
    # RFC 6026 Figure 7: 2xx goes to Accepted.
    (IST, SS.PROCEEDING, SI.TU_2XX, (A.SEND_RESPONSE, A.START_TIMER_L), SS.ACCEPTED),
    (IST, SS.ACCEPTED, SI.REQUEST, (), SS.ACCEPTED),
    (IST, SS.ACCEPTED, SI.TU_2XX, (A.SEND_RESPONSE,), SS.ACCEPTED),
    (IST, SS.ACCEPTED, SI.ACK, (A.PASS_ACK,), SS.ACCEPTED),
    (IST, SS.ACCEPTED, SI.TIMER_L, (), SS.TERMINATED),
    # Figure 8 (NIST)
    (NIST, SS.TRYING, SI.REQUEST, (), SS.TRYING),
    (NIST, SS.TRYING, SI.TU_1XX, (A.SEND_RESPONSE,), SS.PROCEEDING),
    (NIST, SS.TRYING, SI.TU_300_699, (A.SEND_RESPONSE, A.START_TIMER_J), SS.COMPLETED),
    (NIST, SS.PROCEEDING, SI.REQUEST, (A.RESEND_RESPONSE,), SS.PROCEEDING),
    (NIST, SS.PROCEEDING, SI.TU_2XX, (A.SEND_RESPONSE, A.START_TIMER_J), SS.COMPLETED),
    (NIST, SS.COMPLETED, SI.REQUEST, (A.RESEND_RESPONSE,), SS.COMPLETED),
    (NIST, SS.COMPLETED, SI.TRANSPORT_ERROR, (A.INFORM_TU_TRANSPORT_ERROR,), SS.TERMINATED),
    (NIST, SS.COMPLETED, SI.TIMER_J, (), SS.TERMINATED),
]


@pytest.mark.parametrize(
    ("machine", "state", "event", "actions", "next_state"),
    RFC_ROWS,
    ids=[f"{m.name}-{state.name}-{event.name}" for m, state, event, _, _ in RFC_ROWS],
)
def test_rfc_rows(
    machine: Machine[Any, Any], state: Any, event: Any, actions: tuple[Action, ...], next_state: Any
) -> None:
    transition = machine.step(state, event)
    assert transition.actions == actions
    assert transition.next_state is next_state


@pytest.mark.parametrize(
    ("machine", "state", "event"),
    [
        # A second final from the TU, or a provisional after the final: not in the figures.
        (IST, SS.COMPLETED, SI.TU_300_699),
        (IST, SS.COMPLETED, SI.TU_2XX),
        (IST, SS.ACCEPTED, SI.TU_1XX),
        (IST, SS.ACCEPTED, SI.TU_300_699),
        (NIST, SS.COMPLETED, SI.TU_2XX),
        (NIST, SS.COMPLETED, SI.TU_1XX),
        # Timers that no state of the machine arms there.
        (ICT, CS.PROCEEDING, CI.TIMER_B),
        (NICT, CS.COMPLETED, CI.TIMER_E),
    ],
)
def test_missing_pairs_are_protocol_errors(
    machine: Machine[Any, Any], state: Any, event: Any
) -> None:
    assert (state, event) not in machine.table
    transition = machine.step(state, event)
    assert transition.actions == (A.PROTOCOL_ERROR,)
    assert transition.next_state is machine.terminated


def test_starts() -> None:
    assert ICT.start.next_state is CS.CALLING
    assert ICT.start.actions == (A.SEND_REQUEST, A.START_TIMER_A, A.START_TIMER_B)
    assert NICT.start.next_state is CS.TRYING
    assert NICT.start.actions == (A.SEND_REQUEST, A.START_TIMER_E, A.START_TIMER_F)
    assert IST.start.next_state is SS.PROCEEDING
    assert IST.start.actions == (A.SEND_TRYING, A.PASS_REQUEST)
    assert NIST.start.next_state is SS.TRYING
    assert NIST.start.actions == (A.PASS_REQUEST,)


@pytest.mark.parametrize(
    ("status", "client", "server"),
    [
        (100, CI.RESPONSE_1XX, SI.TU_1XX),
        (183, CI.RESPONSE_1XX, SI.TU_1XX),
        (199, CI.RESPONSE_1XX, SI.TU_1XX),
        (200, CI.RESPONSE_2XX, SI.TU_2XX),
        (299, CI.RESPONSE_2XX, SI.TU_2XX),
        (300, CI.RESPONSE_300_699, SI.TU_300_699),
        (487, CI.RESPONSE_300_699, SI.TU_300_699),
        (699, CI.RESPONSE_300_699, SI.TU_300_699),
    ],
)
def test_status_classes(status: int, client: ClientInput, server: ServerInput) -> None:
    assert client_input_for(status) is client
    assert server_input_for(status) is server


def timers_of(machine: Machine[Any, Any]) -> list[Any]:
    return [event for event in inputs_of(machine) if event.name.startswith("TIMER_")]


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.name)
def test_entering_a_state_disarms_exactly_the_timers_it_does_not_keep(
    machine: Machine[Any, Any],
) -> None:
    # Every state x input, with every timer of the machine armed: what is left armed after
    # the step is what the next state keeps; staying put disarms nothing.
    timers = timers_of(machine)
    for state in all_states_of(machine):
        for event in inputs_of(machine):
            transition = machine.step(state, event)
            dropped = enter(machine, state, transition.next_state, timers)
            left = [timer for timer in timers if timer not in dropped]
            if transition.next_state is state:
                assert dropped == []
            else:
                assert set(left) == set(machine.timers[transition.next_state])
                assert list(dropped) == [t for t in timers if t in dropped]  # armed order


@given(machine_state_input(), st.data())
def test_enter_only_disarms_armed_timers(case: tuple[Any, Any, Any], data: st.DataObject) -> None:
    machine, state, event = case
    armed = data.draw(st.lists(st.sampled_from(timers_of(machine)), unique=True))
    transition = machine.step(state, event)
    dropped = enter(machine, state, transition.next_state, armed)
    assert set(dropped) <= set(armed)
    assert not set(dropped) & set(machine.timers.get(transition.next_state, ()))


def test_due_timers_come_earliest_first() -> None:
    deadlines = {SI.TIMER_H: 32.0, SI.TIMER_G: 0.5, SI.TIMER_I: 5.0, SI.TIMER_L: 5.0}
    assert due(deadlines, 0.4) == []
    assert due(deadlines, 0.5) == [(SI.TIMER_G, 0.5)]
    # Equal deadlines keep the order they were armed in (the sort is stable).
    assert [timer for timer, _ in due(deadlines, 10.0)] == [SI.TIMER_G, SI.TIMER_I, SI.TIMER_L]
    assert [timer for timer, _ in due(deadlines, 40.0)] == [
        SI.TIMER_G,
        SI.TIMER_I,
        SI.TIMER_L,
        SI.TIMER_H,
    ]
    assert due({}, 1.0) == []
