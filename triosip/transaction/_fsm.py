"""The four transaction machines of RFC 3261 §17 as tables, with RFC 6026's Accepted states.

Theory of operation
-------------------
Each machine maps ``(state, input) -> Transition(actions, next_state)``. Inputs are what the
network, the transaction user (TU) or a timer does; actions are what the transaction must do
about it, in order. The comment beside each row quotes the label of that arrow in RFC 3261
Figures 5-8 ("event / action"), or in the Figures 5 and 7 that RFC 6026 §8 puts in their place.
Rows marked *not in the figure* are inputs the RFC's prose settles (or leaves silent and we
absorb on purpose); each says why.

A pair missing from a table is a protocol error: :meth:`Machine.step` answers it with
``PROTOCOL_ERROR`` and the terminated state, like the ``_transitions`` table of h2's stream
machine. Timer inputs have no such risk: :attr:`Machine.timers` lists the timers that stay
armed in each state, every other timer is dropped on entering it, and the tests check that
every armed timer has its row.

Whether a timer really runs is the transaction's business, not the table's: Timer A, E and G
are not started over a reliable transport (§17.1.1.2, §17.1.2.2, §17.2.1), and Timer D, I, J
and K last zero seconds there. This module is pure: no trio, no clock, no I/O.
"""

from __future__ import annotations

import enum
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


class _Member(enum.Enum):
    """An enum whose members hash by identity: they are dict keys on every message (the
    machine's table, the armed timers), and ``Enum.__hash__`` is a Python call hashing the
    member's name (~0.3 µs a lookup). Members are singletons compared by identity, so the
    identity hash agrees with equality."""

    __hash__ = object.__hash__


class ClientState(_Member):
    """States of the client machines (ICT: Figure 5, NICT: Figure 6)."""

    CALLING = "Calling"  # ICT only
    TRYING = "Trying"  # NICT only
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    ACCEPTED = "Accepted"  # ICT only, RFC 6026
    TERMINATED = "Terminated"


class ServerState(_Member):
    """States of the server machines (IST: Figure 7, NIST: Figure 8)."""

    TRYING = "Trying"  # NIST only
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"  # IST only
    ACCEPTED = "Accepted"  # IST only, RFC 6026
    TERMINATED = "Terminated"


class ClientInput(_Member):
    """What happens to a client transaction."""

    RESPONSE_1XX = "1xx"
    RESPONSE_2XX = "2xx"
    RESPONSE_300_699 = "300-699"
    TIMER_A = "Timer A fires"
    TIMER_B = "Timer B fires"
    TIMER_D = "Timer D fires"
    TIMER_E = "Timer E fires"
    TIMER_F = "Timer F fires"
    TIMER_K = "Timer K fires"
    TIMER_M = "Timer M fires"
    TRANSPORT_ERROR = "Transport Err."


class ServerInput(_Member):
    """What happens to a server transaction."""

    REQUEST = "request retransmission"
    ACK = "ACK"
    TU_1XX = "101-199 from TU"
    TU_2XX = "2xx from TU"
    TU_300_699 = "300-699 from TU"
    TIMER_G = "Timer G fires"
    TIMER_H = "Timer H fires"
    TIMER_I = "Timer I fires"
    TIMER_J = "Timer J fires"
    TIMER_L = "Timer L fires"
    TRANSPORT_ERROR = "Transport Err."


class Action(_Member):
    """What a transaction does, in the order a transition lists them."""

    # Client side.
    SEND_REQUEST = "send request"
    RETRANSMIT_REQUEST = "retransmit request"
    PASS_RESPONSE = "resp. to TU"
    SEND_ACK = "ACK sent"  # §17.1.1.3: built by the transaction, same branch
    # Server side.
    SEND_TRYING = "send 100 Trying"  # §17.2.1: "send 100 if TU won't in 200 ms"
    PASS_REQUEST = "pass to TU"
    SEND_RESPONSE = "send response"
    RESEND_RESPONSE = "send last response again"
    PASS_ACK = "ACK to TU"  # RFC 6026 §8.7: an ACK in Accepted belongs to the TU
    # Both.
    INFORM_TU_TIMEOUT = "inform TU: timeout"
    INFORM_TU_TRANSPORT_ERROR = "inform TU: transport error"
    PROTOCOL_ERROR = "protocol error"
    # Timers. START_* arms a timer with its initial value; the others re-arm a running one.
    START_TIMER_A = "start Timer A (T1)"
    DOUBLE_TIMER_A = "reset Timer A, doubled"
    START_TIMER_B = "start Timer B (64*T1)"
    START_TIMER_D = "start Timer D"
    START_TIMER_E = "start Timer E (T1)"
    DOUBLE_TIMER_E = "reset Timer E, doubled, capped at T2"
    RESET_TIMER_E_T2 = "reset Timer E to T2"
    START_TIMER_F = "start Timer F (64*T1)"
    START_TIMER_K = "start Timer K"
    START_TIMER_M = "start Timer M (64*T1)"
    START_TIMER_G = "start Timer G (T1)"
    DOUBLE_TIMER_G = "reset Timer G, doubled, capped at T2"
    START_TIMER_H = "start Timer H (64*T1)"
    START_TIMER_I = "start Timer I"
    START_TIMER_J = "start Timer J"
    START_TIMER_L = "start Timer L (64*T1)"


# The actions that arm a timer: a transition with one of them reads the clock.
TIMER_ACTIONS = frozenset(
    action
    for action in Action
    if action.name.startswith(("START_TIMER_", "DOUBLE_TIMER_", "RESET_TIMER_"))
)

S = TypeVar("S", ClientState, ServerState)
I = TypeVar("I", ClientInput, ServerInput)  # noqa: E741 - the usual name for an input alphabet
H = TypeVar("H")


@dataclass(frozen=True, slots=True)
class Transition(Generic[S]):
    """The actions to take, in order, and the state to be in afterwards."""

    actions: tuple[Action, ...]
    next_state: S


@dataclass(frozen=True, slots=True)
class Machine(Generic[S, I]):
    """One of the four machines: its start, its table and the timers each state keeps.

    Attributes:
        name: "ICT", "NICT", "IST" or "NIST".
        start: what creating the transaction does (the arrow into the initial state).
        table: ``(state, input) -> Transition``.
        timers: the timer inputs that stay armed in each state; entering a state drops the
            others (e.g. the ICT's Timer A and B on leaving Calling).
        terminated: the final state.
    """

    name: str
    start: Transition[S]
    table: Mapping[tuple[S, I], Transition[S]]
    timers: Mapping[S, frozenset[I]]
    terminated: S

    def step(self, state: S, event: I) -> Transition[S]:
        """Return the transition for ``event`` in ``state``.

        Args:
            state: the current state.
            event: what happened.

        Returns:
            The table's transition; for a pair missing from the table, a protocol error:
            ``PROTOCOL_ERROR`` and the terminated state.
        """
        transition = self.table.get((state, event))
        if transition is None:
            return Transition((Action.PROTOCOL_ERROR,), self.terminated)
        return transition

    @property
    def states(self) -> frozenset[S]:
        """Every state this machine can be in."""
        found = {self.start.next_state, self.terminated}
        for (state, _), transition in self.table.items():
            found.update((state, transition.next_state))
        return frozenset(found)


def enter(machine: Machine[S, I], state: S, next_state: S, armed: Iterable[I]) -> list[I]:
    """The armed timers that moving from ``state`` to ``next_state`` disarms.

    Entering a state drops every timer it does not keep (``Machine.timers``): §17.1.1.2, a
    1xx stops Timer A and B; §17.2.1, an ACK stops Timer G and H. Staying in a state drops
    nothing (a retransmission re-arms its timer through the transition's actions).

    Args:
        machine: the transaction's machine.
        state: the state it is in.
        next_state: the state the transition leads to.
        armed: the timer inputs now armed.

    Returns:
        The timers to disarm, in the order of ``armed``.
    """
    if next_state is state:
        return []
    keep = machine.timers[next_state]
    return [timer for timer in armed if timer not in keep]


def due(deadlines: Mapping[I, float], now: float) -> list[tuple[I, float]]:
    """The timers whose deadline has passed at ``now``, earliest first, with their deadline.

    Each is an input of the machine, to step in this order: an earlier one may end the
    transaction or disarm a later one (the caller checks it is still armed).
    """
    if len(deadlines) == 1:  # the usual case: no list to build and sort
        ((event, when),) = deadlines.items()
        return [(event, when)] if when <= now else []
    return sorted([item for item in deadlines.items() if item[1] <= now], key=_WHEN)


_WHEN = operator.itemgetter(1)  # a C function: no Python call per item sorted


class Step(NamedTuple, Generic[S, H]):
    """A transition made ready to run: what a transaction does on every message.

    Attributes:
        next_state: the transition's next state.
        handlers: one handler per action, in the transition's order (actions that need no
            work of the transaction are left out).
        timed: whether an action arms a timer (the transaction then reads the clock once).
    """

    next_state: S
    handlers: tuple[H, ...]
    timed: bool


def compile_step(transition: Transition[S], handlers: Mapping[Action, H | None]) -> Step[S, H]:
    """``transition`` with each action replaced by its handler (None: nothing to do).

    Raises:
        KeyError: an action has no entry in ``handlers``.
    """
    return Step(
        transition.next_state,
        tuple(h for h in (handlers[a] for a in transition.actions) if h is not None),
        any(action in TIMER_ACTIONS for action in transition.actions),
    )


def compile_table(
    machine: Machine[S, I], handlers: Mapping[Action, H | None]
) -> dict[tuple[S, I], Step[S, H]]:
    """The machine's table with each transition compiled (:func:`compile_step`), so that a
    transaction runs a transition as a dict lookup and one call per handler, with no
    dispatch on the action. A pair missing from it is a protocol error, as in
    :meth:`Machine.step`."""
    return {key: compile_step(t, handlers) for key, t in machine.table.items()}


def _t(next_state: S, *actions: Action) -> Transition[S]:
    return Transition(actions, next_state)


A = Action
CS = ClientState
CI = ClientInput
SS = ServerState
SI = ServerInput

# RFC 3261 Figure 5, "INVITE client transaction", as RFC 6026 Figure 5 replaces it.
ICT: Machine[ClientState, ClientInput] = Machine(
    name="ICT",
    # "INVITE from TU / INVITE sent"; §17.1.1.2: Timer A (unreliable only) and Timer B.
    start=_t(CS.CALLING, A.SEND_REQUEST, A.START_TIMER_A, A.START_TIMER_B),
    table={
        # "Timer A fires / Reset A, INVITE sent"
        (CS.CALLING, CI.TIMER_A): _t(CS.CALLING, A.RETRANSMIT_REQUEST, A.DOUBLE_TIMER_A),
        # "Timer B fires or Transport Err. / inform TU"
        (CS.CALLING, CI.TIMER_B): _t(CS.TERMINATED, A.INFORM_TU_TIMEOUT),
        (CS.CALLING, CI.TRANSPORT_ERROR): _t(CS.TERMINATED, A.INFORM_TU_TRANSPORT_ERROR),
        # "1xx / 1xx to TU"
        (CS.CALLING, CI.RESPONSE_1XX): _t(CS.PROCEEDING, A.PASS_RESPONSE),
        # "2xx / 2xx to TU" (RFC 6026: to Accepted, no longer to Terminated)
        (CS.CALLING, CI.RESPONSE_2XX): _t(CS.ACCEPTED, A.PASS_RESPONSE, A.START_TIMER_M),
        # "300-699 / ACK sent, resp. to TU"
        (CS.CALLING, CI.RESPONSE_300_699): _t(
            CS.COMPLETED, A.SEND_ACK, A.PASS_RESPONSE, A.START_TIMER_D
        ),
        # "1xx / 1xx to TU"
        (CS.PROCEEDING, CI.RESPONSE_1XX): _t(CS.PROCEEDING, A.PASS_RESPONSE),
        # "2xx / 2xx to TU"
        (CS.PROCEEDING, CI.RESPONSE_2XX): _t(CS.ACCEPTED, A.PASS_RESPONSE, A.START_TIMER_M),
        # "300-699 / ACK sent, resp. to TU"
        (CS.PROCEEDING, CI.RESPONSE_300_699): _t(
            CS.COMPLETED, A.SEND_ACK, A.PASS_RESPONSE, A.START_TIMER_D
        ),
        # Not in the figure: the only thing Proceeding sends is nothing, but a Transport Err.
        # can still be reported late; it ends the transaction as in Calling.
        (CS.PROCEEDING, CI.TRANSPORT_ERROR): _t(CS.TERMINATED, A.INFORM_TU_TRANSPORT_ERROR),
        # "300-699 / ACK sent": §17.1.1.2, a retransmitted final is absorbed, the ACK re-sent.
        (CS.COMPLETED, CI.RESPONSE_300_699): _t(CS.COMPLETED, A.SEND_ACK),
        # "Transport Err. / Inform TU"
        (CS.COMPLETED, CI.TRANSPORT_ERROR): _t(CS.TERMINATED, A.INFORM_TU_TRANSPORT_ERROR),
        # "Timer D fires / -"
        (CS.COMPLETED, CI.TIMER_D): _t(CS.TERMINATED),
        # Not in the figure: a provisional reordered behind the final is stale; absorbed.
        (CS.COMPLETED, CI.RESPONSE_1XX): _t(CS.COMPLETED),
        # Not in the figure: a 2xx after a non-2xx final. §16.7 step 5 has a proxy forward
        # every 2xx to an INVITE, so it goes up rather than being lost.
        (CS.COMPLETED, CI.RESPONSE_2XX): _t(CS.COMPLETED, A.PASS_RESPONSE),
        # RFC 6026: "2xx / 2xx to TU"
        (CS.ACCEPTED, CI.RESPONSE_2XX): _t(CS.ACCEPTED, A.PASS_RESPONSE),
        # RFC 6026: "Timer M fires / -"
        (CS.ACCEPTED, CI.TIMER_M): _t(CS.TERMINATED),
        # Not in the figure: a stale provisional, or a non-2xx final after a 2xx (a broken
        # downstream fork); the call is up, so both are absorbed.
        (CS.ACCEPTED, CI.RESPONSE_1XX): _t(CS.ACCEPTED),
        (CS.ACCEPTED, CI.RESPONSE_300_699): _t(CS.ACCEPTED),
    },
    timers={
        CS.CALLING: frozenset({CI.TIMER_A, CI.TIMER_B}),
        CS.PROCEEDING: frozenset(),  # §17.1.1.2: no retransmission, Timer B only in Calling
        CS.COMPLETED: frozenset({CI.TIMER_D}),
        CS.ACCEPTED: frozenset({CI.TIMER_M}),
        CS.TERMINATED: frozenset(),
    },
    terminated=CS.TERMINATED,
)

# RFC 3261 Figure 5 as published, before RFC 6026: a 2xx ends the ICT at once. What a TU
# that will not wait in Accepted gets (``wait_in_accepted=False``, a proxy's branch whose
# 2xx retransmissions are forwarded statelessly): the same machine, without passing
# through Accepted with a Timer M of 0 s (a clock read, a timer armed, a wake-up later).
ICT_WITHOUT_ACCEPTED: Machine[ClientState, ClientInput] = Machine(
    name="ICT",
    start=ICT.start,
    table={
        **ICT.table,
        # §17.1.1.2: "reception of a 2xx response MUST cause the client transaction to
        # enter the 'Terminated' state, and the response MUST be passed up to the TU".
        (CS.CALLING, CI.RESPONSE_2XX): _t(CS.TERMINATED, A.PASS_RESPONSE),
        (CS.PROCEEDING, CI.RESPONSE_2XX): _t(CS.TERMINATED, A.PASS_RESPONSE),
    },
    timers=ICT.timers,
    terminated=CS.TERMINATED,
)

# RFC 3261 Figure 6, "non-INVITE client transaction".
NICT: Machine[ClientState, ClientInput] = Machine(
    name="NICT",
    # "Request from TU / send request"; §17.1.2.2: Timer E (unreliable only) and Timer F.
    start=_t(CS.TRYING, A.SEND_REQUEST, A.START_TIMER_E, A.START_TIMER_F),
    table={
        # "Timer E / send request"; §17.1.2.2: reset to MIN(2*T1, T2), doubling up to T2.
        (CS.TRYING, CI.TIMER_E): _t(CS.TRYING, A.RETRANSMIT_REQUEST, A.DOUBLE_TIMER_E),
        # "Timer F or Transport Err. / inform TU"
        (CS.TRYING, CI.TIMER_F): _t(CS.TERMINATED, A.INFORM_TU_TIMEOUT),
        (CS.TRYING, CI.TRANSPORT_ERROR): _t(CS.TERMINATED, A.INFORM_TU_TRANSPORT_ERROR),
        # "1xx / resp. to TU"
        (CS.TRYING, CI.RESPONSE_1XX): _t(CS.PROCEEDING, A.PASS_RESPONSE),
        # "200-699 / resp. to TU"; §17.1.2.2: Timer K on entering Completed.
        (CS.TRYING, CI.RESPONSE_2XX): _t(CS.COMPLETED, A.PASS_RESPONSE, A.START_TIMER_K),
        (CS.TRYING, CI.RESPONSE_300_699): _t(CS.COMPLETED, A.PASS_RESPONSE, A.START_TIMER_K),
        # "Timer E / send req"; §17.1.2.2: in Proceeding, Timer E is reset to T2.
        (CS.PROCEEDING, CI.TIMER_E): _t(CS.PROCEEDING, A.RETRANSMIT_REQUEST, A.RESET_TIMER_E_T2),
        # "Timer F or Transport Err. / inform TU"
        (CS.PROCEEDING, CI.TIMER_F): _t(CS.TERMINATED, A.INFORM_TU_TIMEOUT),
        (CS.PROCEEDING, CI.TRANSPORT_ERROR): _t(CS.TERMINATED, A.INFORM_TU_TRANSPORT_ERROR),
        # "1xx / resp to TU"
        (CS.PROCEEDING, CI.RESPONSE_1XX): _t(CS.PROCEEDING, A.PASS_RESPONSE),
        # "200-699 / resp. to TU"
        (CS.PROCEEDING, CI.RESPONSE_2XX): _t(CS.COMPLETED, A.PASS_RESPONSE, A.START_TIMER_K),
        (CS.PROCEEDING, CI.RESPONSE_300_699): _t(CS.COMPLETED, A.PASS_RESPONSE, A.START_TIMER_K),
        # "Timer K / -"
        (CS.COMPLETED, CI.TIMER_K): _t(CS.TERMINATED),
        # §17.1.2.2: Completed exists "to buffer any additional response retransmissions";
        # they, and a stale provisional, are absorbed.
        (CS.COMPLETED, CI.RESPONSE_1XX): _t(CS.COMPLETED),
        (CS.COMPLETED, CI.RESPONSE_2XX): _t(CS.COMPLETED),
        (CS.COMPLETED, CI.RESPONSE_300_699): _t(CS.COMPLETED),
    },
    timers={
        # §17.1.2.2: Timer E and F keep running from Trying into Proceeding.
        CS.TRYING: frozenset({CI.TIMER_E, CI.TIMER_F}),
        CS.PROCEEDING: frozenset({CI.TIMER_E, CI.TIMER_F}),
        CS.COMPLETED: frozenset({CI.TIMER_K}),
        CS.TERMINATED: frozenset(),
    },
    terminated=CS.TERMINATED,
)

# RFC 3261 Figure 7, "INVITE server transaction", as RFC 6026 Figure 7 replaces it.
IST: Machine[ServerState, ServerInput] = Machine(
    name="IST",
    # "INVITE / pass INV to TU, send 100 if TU won't in 200 ms": we always send it at once.
    start=_t(SS.PROCEEDING, A.SEND_TRYING, A.PASS_REQUEST),
    table={
        # "INVITE / send response"
        (SS.PROCEEDING, SI.REQUEST): _t(SS.PROCEEDING, A.RESEND_RESPONSE),
        # "101-199 from TU / send response"
        (SS.PROCEEDING, SI.TU_1XX): _t(SS.PROCEEDING, A.SEND_RESPONSE),
        # "2xx from TU / send response" (RFC 6026: to Accepted, no longer to Terminated)
        (SS.PROCEEDING, SI.TU_2XX): _t(SS.ACCEPTED, A.SEND_RESPONSE, A.START_TIMER_L),
        # "300-699 from TU / send response"; §17.2.1: Timer G (unreliable only), Timer H.
        (SS.PROCEEDING, SI.TU_300_699): _t(
            SS.COMPLETED, A.SEND_RESPONSE, A.START_TIMER_G, A.START_TIMER_H
        ),
        # "Transport Err. / Inform TU"
        (SS.PROCEEDING, SI.TRANSPORT_ERROR): _t(SS.TERMINATED, A.INFORM_TU_TRANSPORT_ERROR),
        # Not in the figure: no UAC can ACK before it has a final response. Absorbed, so
        # that a forged ACK cannot end a transaction that is still ringing.
        (SS.PROCEEDING, SI.ACK): _t(SS.PROCEEDING),
        # "INVITE / send response"
        (SS.COMPLETED, SI.REQUEST): _t(SS.COMPLETED, A.RESEND_RESPONSE),
        # "Timer G fires / send response"; §17.2.1: reset to MIN(2*T1, T2), doubling up to T2.
        (SS.COMPLETED, SI.TIMER_G): _t(SS.COMPLETED, A.RESEND_RESPONSE, A.DOUBLE_TIMER_G),
        # "ACK / -"; §17.2.1: Timer I on entering Confirmed.
        (SS.COMPLETED, SI.ACK): _t(SS.CONFIRMED, A.START_TIMER_I),
        # "Timer H fires or Transport Err. / Inform TU"
        (SS.COMPLETED, SI.TIMER_H): _t(SS.TERMINATED, A.INFORM_TU_TIMEOUT),
        (SS.COMPLETED, SI.TRANSPORT_ERROR): _t(SS.TERMINATED, A.INFORM_TU_TRANSPORT_ERROR),
        # §17.2.1: Confirmed exists "to absorb any additional ACK messages"; a late INVITE
        # (its UAC has already ACKed) is absorbed likewise.
        (SS.CONFIRMED, SI.ACK): _t(SS.CONFIRMED),
        (SS.CONFIRMED, SI.REQUEST): _t(SS.CONFIRMED),
        # "Timer I fires / -"
        (SS.CONFIRMED, SI.TIMER_I): _t(SS.TERMINATED),
        # RFC 6026: "INVITE / -": the 2xx is retransmitted by the UAS core end to end.
        (SS.ACCEPTED, SI.REQUEST): _t(SS.ACCEPTED),
        # RFC 6026 §8.7: ACKs received in Accepted are passed to the TU, not absorbed.
        (SS.ACCEPTED, SI.ACK): _t(SS.ACCEPTED, A.PASS_ACK),
        # RFC 6026: "2xx from TU / send response"
        (SS.ACCEPTED, SI.TU_2XX): _t(SS.ACCEPTED, A.SEND_RESPONSE),
        # RFC 6026: "Transport Err. / Inform TU" (stays in Accepted)
        (SS.ACCEPTED, SI.TRANSPORT_ERROR): _t(SS.ACCEPTED, A.INFORM_TU_TRANSPORT_ERROR),
        # RFC 6026: "Timer L fires / -"
        (SS.ACCEPTED, SI.TIMER_L): _t(SS.TERMINATED),
    },
    timers={
        SS.PROCEEDING: frozenset(),
        SS.COMPLETED: frozenset({SI.TIMER_G, SI.TIMER_H}),
        SS.CONFIRMED: frozenset({SI.TIMER_I}),
        SS.ACCEPTED: frozenset({SI.TIMER_L}),
        SS.TERMINATED: frozenset(),
    },
    terminated=SS.TERMINATED,
)

# RFC 3261 Figure 8, "non-INVITE server transaction".
NIST: Machine[ServerState, ServerInput] = Machine(
    name="NIST",
    # "Request received / pass to TU"
    start=_t(SS.TRYING, A.PASS_REQUEST),
    table={
        # §17.2.2: "any further request retransmissions are discarded" while in Trying.
        (SS.TRYING, SI.REQUEST): _t(SS.TRYING),
        # "1xx from TU / send response"
        (SS.TRYING, SI.TU_1XX): _t(SS.PROCEEDING, A.SEND_RESPONSE),
        # "200-699 from TU / send response"; §17.2.2: Timer J on entering Completed.
        (SS.TRYING, SI.TU_2XX): _t(SS.COMPLETED, A.SEND_RESPONSE, A.START_TIMER_J),
        (SS.TRYING, SI.TU_300_699): _t(SS.COMPLETED, A.SEND_RESPONSE, A.START_TIMER_J),
        # Not in the figure: Trying has sent nothing yet, but a failed send of the first
        # response is reported from here.
        (SS.TRYING, SI.TRANSPORT_ERROR): _t(SS.TERMINATED, A.INFORM_TU_TRANSPORT_ERROR),
        # "Request / send response"
        (SS.PROCEEDING, SI.REQUEST): _t(SS.PROCEEDING, A.RESEND_RESPONSE),
        # "1xx from TU / send response"
        (SS.PROCEEDING, SI.TU_1XX): _t(SS.PROCEEDING, A.SEND_RESPONSE),
        # "200-699 from TU / send response"
        (SS.PROCEEDING, SI.TU_2XX): _t(SS.COMPLETED, A.SEND_RESPONSE, A.START_TIMER_J),
        (SS.PROCEEDING, SI.TU_300_699): _t(SS.COMPLETED, A.SEND_RESPONSE, A.START_TIMER_J),
        # "Trnsprt Err / Inform TU"
        (SS.PROCEEDING, SI.TRANSPORT_ERROR): _t(SS.TERMINATED, A.INFORM_TU_TRANSPORT_ERROR),
        # "Request / send response"
        (SS.COMPLETED, SI.REQUEST): _t(SS.COMPLETED, A.RESEND_RESPONSE),
        # "Trnsprt Err / Inform TU"
        (SS.COMPLETED, SI.TRANSPORT_ERROR): _t(SS.TERMINATED, A.INFORM_TU_TRANSPORT_ERROR),
        # "Timer J fires / -"
        (SS.COMPLETED, SI.TIMER_J): _t(SS.TERMINATED),
    },
    timers={
        SS.TRYING: frozenset(),
        SS.PROCEEDING: frozenset(),
        SS.COMPLETED: frozenset({SI.TIMER_J}),
        SS.TERMINATED: frozenset(),
    },
    terminated=SS.TERMINATED,
)


def client_input_for(status: int) -> ClientInput:
    """Classify a received response's status code as a client machine input."""
    if status < 200:
        return ClientInput.RESPONSE_1XX
    if status < 300:
        return ClientInput.RESPONSE_2XX
    return ClientInput.RESPONSE_300_699


def server_input_for(status: int) -> ServerInput:
    """Classify the status code of a response from the TU as a server machine input."""
    if status < 200:
        return ServerInput.TU_1XX
    if status < 300:
        return ServerInput.TU_2XX
    return ServerInput.TU_300_699
