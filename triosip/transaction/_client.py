"""Client transactions (RFC 3261 §17.1): the ICT and NICT machines, run in the caller's task.

Theory of operation
-------------------
``TransactionLayer.run_client`` runs one client transaction from start to end inside the
task that calls it (the proxy's branch task over TCP), so cancelling that task stops the
transaction at once and leaves nothing behind. ``TransactionLayer.start_client`` runs the
same machine as a record with no task (UDP): its timers are run by the layer's one timers
loop (``_fire_timers``), a send the socket cannot take goes from that loop
(``send_later``), its end is reported to ``on_end``, and whoever started it stops it with
``stop()``.

Two parties feed the machine:

* the transport, through the synchronous ``TransactionLayer.receive``: a response is
  classified, stepped through the table and acted on at once (passed up to ``on_response``,
  ACK sent for a non-2xx final), with UDP sends done by ``send_nowait``;
* the transaction's own loop in the caller's task: it sleeps in one cancel scope whose
  deadline is the earliest armed timer (A, B, D, E, F, K, M). ``receive`` *moves* that
  deadline when a response changes the timers, so a response that only disarms timers (a
  1xx stopping Timer A and B) costs a deadline move, not a wake-up. The loop wakes when a
  timer is due, or at once (deadline -inf) when a send must be awaited (TCP, or a full UDP
  socket) or the machine has terminated.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Protocol

import trio

from triosip.sip import build_ack
from triosip.transport.base import TransportError

from ._errors import TransactionError, TransactionTimeout, TransportFailure
from ._fsm import (
    ICT,
    ICT_WITHOUT_ACCEPTED,
    NICT,
    Action,
    ClientInput,
    ClientState,
    Step,
    Transition,
    compile_step,
    compile_table,
    due,
)
from ._port import Counted, TimedPort

if TYPE_CHECKING:
    from collections.abc import Callable

    from triosip.sip import Request, Response
    from triosip.transport.base import Address, TcpConnection

    from ._fsm import Machine
    from ._keys import ClientKey

logger = logging.getLogger(__name__)

_TERMINATED = ClientState.TERMINATED


class ClientPort(TimedPort, Protocol):
    """What a client transaction may ask of its layer (``TransactionLayer`` gives it one)."""

    def forget_client(self, key: ClientKey, client: ClientTransaction) -> None:
        """Stop matching responses to ``client`` (§17.1.3): it has terminated."""
        ...


class ClientTransaction:
    """One INVITE or non-INVITE client transaction (RFC 3261 §17.1).

    Made and run by ``TransactionLayer.run_client``; the proxy gets it from
    ``task_status.started`` and in every ``on_response`` call. Read-only for the proxy.

    Attributes:
        request: the request as sent (top Via pushed by the proxy).
        destination: where it is sent.
        connection: the TCP connection it is sent on, if one was given.
        branch: the branch of its top Via.
        is_invite: ICT (True) or NICT (False).
        state: the machine's state.
        name: "ICT INVITE z9hG4bK..." or "NICT OPTIONS z9hG4bK...".
        created_at: ``trio.current_time()`` when it was made.
        retransmissions: how many times the request was retransmitted (Timer A/E).
        last_response: the last response received, if any (absorbed ones included).
    """

    __slots__ = (
        "_ack",
        "_data",
        "_deadlines",
        "_failure",
        "_heap_at",
        "_heap_seq",
        "_interval",
        "_key",
        "_machine",
        "_on_end",
        "_on_response",
        "_outbox",
        "_port",
        "_steps",
        "_wait",
        "branch",
        "connection",
        "created_at",
        "destination",
        "is_invite",
        "last_response",
        "name",
        "reliable",
        "request",
        "retransmissions",
        "state",
    )

    def __init__(
        self,
        port: ClientPort,
        request: Request,
        destination: Address,
        *,
        key: ClientKey,
        connection: TcpConnection | None,
        on_response: Callable[[ClientTransaction, Response], None],
        wait_in_accepted: bool = True,
        on_end: Callable[[ClientTransaction, BaseException | None], None] | None = None,
    ) -> None:
        self._port = port
        # Set: the transaction is a record run by the layer's timers loop (``start_client``),
        # and this is called once when it terminates. None: it runs in its caller's task.
        self._on_end = on_end
        self._heap_at = math.inf
        self._heap_seq = 0
        self._key = key
        self._on_response = on_response
        self.request = request
        self.destination = destination
        self.connection = connection
        self.branch = key[0]
        self.is_invite = request.method == "INVITE"
        self._machine: Machine[ClientState, ClientInput]
        if not self.is_invite:
            self._machine, self._steps = NICT, _NICT_STEPS
        elif wait_in_accepted:
            self._machine, self._steps = ICT, _ICT_STEPS
        else:  # RFC 3261 §17.1.1.2 without RFC 6026: a 2xx ends it at once
            self._machine, self._steps = ICT_WITHOUT_ACCEPTED, _ICT_WITHOUT_ACCEPTED_STEPS
        machine = self._machine
        self.state = machine.start.next_state
        self.name = f"{machine.name} {request.method} {self.branch}"
        self.created_at = port.now()
        self.retransmissions = 0
        self.last_response: Response | None = None
        # RFC 3261 §18: TCP (and any stream) is reliable, UDP is not.
        self.reliable = connection is not None or destination.transport != "udp"
        self._data = bytes(request)
        self._ack: bytes | None = None
        self._deadlines: dict[ClientInput, float] = {}
        self._interval = 0.0  # current Timer A or Timer E interval
        self._outbox: list[bytes] = []
        self._wait: trio.CancelScope | None = None
        self._failure: BaseException | None = None

    def __repr__(self) -> str:
        return f"<ClientTransaction {self.name} {self.state.name}>"

    def timer_deadlines(self) -> dict[str, float]:
        """The timers now armed.

        Returns:
            Timer letter ("A", "B", "D", ...) -> its trio deadline.
        """
        return {event.name[-1]: when for event, when in self._deadlines.items()}

    # --- driven by the layer -------------------------------------------------------------

    async def _run(self, task_status: trio.TaskStatus[ClientTransaction]) -> None:
        """The whole transaction, in the caller's task (see the module docstring)."""
        # "INVITE from TU / INVITE sent" (Figure 5), "Request from TU / send request"
        # (Figure 6): the start transition queues the first transmission, arms A/B or E/F.
        # Its timers count from created_at: the same moment, read once.
        self._apply(_STARTS[self.is_invite], None, self.created_at)
        await self._drain()  # the first transmission, if it could not go out at once
        if self._failure is not None:
            raise self._failure  # §17.1.4: before started(), so nursery.start() raises it
        task_status.started(self)
        while self.state is not _TERMINATED:
            deadline = self._next_deadline()
            # Already due (a 0 s timer on TCP, an overdue one): no scope to open for it.
            if deadline > self._port.now():
                with trio.move_on_at(deadline) as self._wait:
                    await trio.sleep_forever()
                self._wait = None
            # Sends queued by receive() first: the ACK of a TCP final must go out before its
            # Timer D (0 s) ends the transaction.
            await self._drain()
            self._fire_due_timers()
            await self._drain()
        if self._failure is not None:
            raise self._failure  # Timer B/F, a transport error, or on_response's exception

    def _close(self) -> None:
        """Terminate (if not yet) and leave the layer's table: _run() has ended."""
        if self.state is not _TERMINATED:
            # Cancelled from outside (fr timer, CANCEL, shutdown): no CANCEL is sent here,
            # the proxy sends it as its own transaction (RFC 3261 §9.1).
            logger.debug(
                "%s Call-ID %s: stopped in %s", self.name, self.request.call_id, self.state.name
            )
            self.state = _TERMINATED
        self._deadlines.clear()
        self._outbox.clear()
        self._port.forget_client(self._key, self)

    # --- run by the layer's timers loop (``TransactionLayer.start_client``) ---------------

    def _start(self) -> None:
        """Send the request and arm the timers; from now on the layer's loop runs them."""
        # "INVITE from TU / INVITE sent" (Figure 5), "Request from TU / send request".
        # Its timers count from created_at: the same moment, read once.
        self._apply(_STARTS[self.is_invite], None, self.created_at)

    def stop(self) -> None:
        """Stop a transaction made by ``start_client`` now, without a word to the peer (the
        proxy sends CANCEL as a transaction of its own, §9.1): ``on_end`` is not called."""
        if self.state is _TERMINATED:
            return
        self._on_end = None
        self._close()  # logs it

    def detach(self) -> None:
        """The TU is done with this transaction (made by ``start_client``): what is left of
        it (absorbing retransmissions of its final, §17.1.1.2, §17.1.2.2) runs on without a
        word to it, and without keeping the TU's objects alive through its callbacks."""
        self._on_response = _ignore_response
        if self._on_end is not None:
            self._on_end = _ignore_end

    def _fire_timers(self, now: float) -> None:
        """The layer's timers loop woke for this transaction: fire what is due."""
        for event, _ in due(self._deadlines, now):
            if event in self._deadlines:  # an earlier one may have dropped it
                del self._deadlines[event]
                self._step(event, None)
        if self.state is not _TERMINATED:
            self._port.schedule(self)

    def _transport_error(self, exc: TransportError) -> None:
        """A send the layer's loop made for this transaction failed (§17.1.4)."""
        logger.info("%s Call-ID %s: transport error: %s", self.name, self.request.call_id, exc)
        failure = TransportFailure(f"{self.name}: {exc}")
        failure.__cause__ = exc
        self._failure = failure
        self._step(ClientInput.TRANSPORT_ERROR, None)

    def _is_over(self) -> bool:
        return self.state is _TERMINATED

    def _end(self) -> None:
        on_end, self._on_end = self._on_end, None
        self._deadlines.clear()
        if on_end is not None:
            on_end(self, self._failure)

    def _receive(self, response: Response) -> None:
        """A response matched this transaction (§17.1.3). Synchronous, from the transport."""
        # §17.1.1.2, §17.1.2.2: the class of the status code is the machine's input.
        self.last_response = response
        status = response.status
        # client_input_for(), inline (a call per response saved).
        if status < 200:
            event = ClientInput.RESPONSE_1XX
        elif status < 300:
            event = ClientInput.RESPONSE_2XX
        else:
            event = ClientInput.RESPONSE_300_699
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s Call-ID %s: %d received in %s",
                self.name,
                self.request.call_id,
                response.status,
                self.state.name,
            )
        step = self._steps.get((self.state, event))
        self._apply(_PROTOCOL_ERROR if step is None else step, response)  # _step(), inline

    # --- the machine ---------------------------------------------------------------------

    def _step(self, event: ClientInput, response: Response | None) -> None:
        step = self._steps.get((self.state, event))
        # A pair missing from the table is a protocol error (_fsm.py, Machine.step).
        self._apply(_PROTOCOL_ERROR if step is None else step, response)

    def _apply(self, step: _Step, response: Response | None, now: float | None = None) -> None:
        next_state, handlers, timed = step
        changed = next_state is not self.state
        if changed:
            # Entering a state drops the timers it does not keep (_fsm.enter).
            deadlines = self._deadlines
            if deadlines:
                keep = self._machine.timers[next_state]
                for timer in tuple(deadlines):
                    if timer not in keep:
                        del deadlines[timer]
            self.state = next_state
        if now is None:
            # One clock read for the transition, and only if it arms a timer.
            now = self._port.now() if timed else 0.0
        for handler in handlers:
            handler(self, response, now)
        if self._failure is not None and self.state is not _TERMINATED:
            self.state = _TERMINATED
            self._deadlines.clear()
        if self.state is _TERMINATED:
            self._port.forget_client(self._key, self)
            if self._on_end is not None:
                self._end()
                return
        wait = self._wait
        if wait is not None:
            wait.deadline = self._next_deadline()
        elif (changed or timed) and self._on_end is not None:
            self._port.schedule(self)  # the timers changed: the layer's loop wakes for them

    # The actions (``_fsm.Action``), one handler each; ``_HANDLERS`` below maps them.

    def _pass_response(self, response: Response | None, now: float) -> None:
        assert response is not None
        try:
            self._on_response(self, response)
        except Exception as exc:  # the TU's bug: raised from run_client, in its task
            self._failure = exc

    def _send_request(self, response: Response | None, now: float) -> None:
        self._transmit(self._data)

    def _retransmit_request(self, response: Response | None, now: float) -> None:
        self.retransmissions += 1
        self._port.count(Counted.RETRANSMISSION_SENT)
        logger.debug(
            "%s Call-ID %s: retransmission %d",
            self.name,
            self.request.call_id,
            self.retransmissions,
        )
        self._transmit(self._data)

    def _send_ack(self, response: Response | None, now: float) -> None:
        assert response is not None
        if self._ack is None:
            self._ack = bytes(build_ack(self.request, response))
        else:
            self._port.count(Counted.RETRANSMISSION_ABSORBED)
        self._transmit(self._ack)

    def _start_timer_a(self, response: Response | None, now: float) -> None:
        # §17.1.1.2: "If a reliable transport is being used, the client transaction
        # SHOULD NOT start timer A".
        if not self.reliable:
            self._interval = self._port.timers.timer_a
            self._deadlines[ClientInput.TIMER_A] = now + self._interval

    def _double_timer_a(self, response: Response | None, now: float) -> None:
        # §17.1.1.2: intervals double after each transmission; Timer A is not capped.
        self._interval *= 2
        self._deadlines[ClientInput.TIMER_A] = now + self._interval

    def _start_timer_b(self, response: Response | None, now: float) -> None:
        self._deadlines[ClientInput.TIMER_B] = now + self._port.timers.timer_b

    def _start_timer_d(self, response: Response | None, now: float) -> None:
        self._deadlines[ClientInput.TIMER_D] = now + self._port.timers.timer_d(self.reliable)

    def _start_timer_e(self, response: Response | None, now: float) -> None:
        if not self.reliable:  # §17.1.2.2: only "if an unreliable transport is in use"
            self._interval = self._port.timers.timer_e
            self._deadlines[ClientInput.TIMER_E] = now + self._interval

    def _double_timer_e(self, response: Response | None, now: float) -> None:
        # §17.1.2.2: MIN(2*T1, T2), then doubling, capped at T2.
        self._interval = min(2 * self._interval, self._port.timers.t2)
        self._deadlines[ClientInput.TIMER_E] = now + self._interval

    def _reset_timer_e_t2(self, response: Response | None, now: float) -> None:
        # §17.1.2.2: in Proceeding, "Timer E MUST be reset with a value of T2 seconds".
        self._interval = self._port.timers.t2
        self._deadlines[ClientInput.TIMER_E] = now + self._interval

    def _start_timer_f(self, response: Response | None, now: float) -> None:
        self._deadlines[ClientInput.TIMER_F] = now + self._port.timers.timer_f

    def _start_timer_k(self, response: Response | None, now: float) -> None:
        self._deadlines[ClientInput.TIMER_K] = now + self._port.timers.timer_k(self.reliable)

    def _start_timer_m(self, response: Response | None, now: float) -> None:
        # RFC 6026 §7.2: Accepted lasts 64*T1, to pass the 2xx retransmissions up. (With
        # wait_in_accepted False the machine is RFC 3261's, which never enters Accepted.)
        self._deadlines[ClientInput.TIMER_M] = now + self._port.timers.timer_m

    def _inform_tu_timeout(self, response: Response | None, now: float) -> None:
        self._port.count(Counted.TIMEOUT)
        # Normal SIP life (a dead or unreachable next hop): INFO, not WARNING.
        logger.info(
            "%s Call-ID %s: no final response, timed out in %s",
            self.name,
            self.request.call_id,
            self.state.name,
        )
        self._failure = TransactionTimeout(f"{self.name}: no final response")

    def _inform_tu_transport_error(self, response: Response | None, now: float) -> None:
        if self._failure is None:
            self._failure = TransportFailure(f"{self.name}: transport error")

    def _protocol_error(self, response: Response | None, now: float) -> None:
        logger.warning("%s Call-ID %s: protocol error", self.name, self.request.call_id)
        self._failure = TransactionError(f"{self.name}: protocol error")

    def _fire_due_timers(self) -> None:
        for event, _ in due(self._deadlines, self._port.now()):
            # An earlier timer of the same pass may have ended the transaction or changed
            # state and dropped this one.
            if event in self._deadlines:
                del self._deadlines[event]
                self._step(event, None)

    # --- sending -------------------------------------------------------------------------

    def _next_deadline(self) -> float:
        if self._outbox or self.state is _TERMINATED:
            return -math.inf
        return min(self._deadlines.values(), default=math.inf)

    def _transmit(self, data: bytes) -> None:
        # UDP goes out synchronously; anything else waits for the transaction's own task,
        # or for the layer's timers loop when it has none.
        if self.reliable or not self._port.transport.send_nowait(data, self.destination):
            if self._on_end is not None:
                self._port.send_later(data, self.destination, None, self.connection, self)
            else:
                self._outbox.append(data)

    async def _drain(self) -> None:
        transport = self._port.transport
        while self._outbox and self.state is not _TERMINATED:
            data = self._outbox.pop(0)
            try:
                await transport.send(data, self.destination, connection=self.connection)
            except TransportError as exc:
                logger.info(
                    "%s Call-ID %s: transport error: %s", self.name, self.request.call_id, exc
                )
                failure = TransportFailure(f"{self.name}: {exc}")
                failure.__cause__ = exc
                self._failure = failure
                self._outbox.clear()
                self._step(ClientInput.TRANSPORT_ERROR, None)


if TYPE_CHECKING:
    _Handler = Callable[[ClientTransaction, Response | None, float], None]
    _Step = Step[ClientState, _Handler]

_HANDLERS: dict[Action, _Handler | None] = {
    Action.PASS_RESPONSE: ClientTransaction._pass_response,
    Action.SEND_REQUEST: ClientTransaction._send_request,
    Action.RETRANSMIT_REQUEST: ClientTransaction._retransmit_request,
    Action.SEND_ACK: ClientTransaction._send_ack,
    Action.START_TIMER_A: ClientTransaction._start_timer_a,
    Action.DOUBLE_TIMER_A: ClientTransaction._double_timer_a,
    Action.START_TIMER_B: ClientTransaction._start_timer_b,
    Action.START_TIMER_D: ClientTransaction._start_timer_d,
    Action.START_TIMER_E: ClientTransaction._start_timer_e,
    Action.DOUBLE_TIMER_E: ClientTransaction._double_timer_e,
    Action.RESET_TIMER_E_T2: ClientTransaction._reset_timer_e_t2,
    Action.START_TIMER_F: ClientTransaction._start_timer_f,
    Action.START_TIMER_K: ClientTransaction._start_timer_k,
    Action.START_TIMER_M: ClientTransaction._start_timer_m,
    Action.INFORM_TU_TIMEOUT: ClientTransaction._inform_tu_timeout,
    Action.INFORM_TU_TRANSPORT_ERROR: ClientTransaction._inform_tu_transport_error,
    Action.PROTOCOL_ERROR: ClientTransaction._protocol_error,
}

# Each machine's table and start, compiled once (_fsm.compile_table).
_ICT_STEPS = compile_table(ICT, _HANDLERS)
_ICT_WITHOUT_ACCEPTED_STEPS = compile_table(ICT_WITHOUT_ACCEPTED, _HANDLERS)
_NICT_STEPS = compile_table(NICT, _HANDLERS)
_STARTS = {True: compile_step(ICT.start, _HANDLERS), False: compile_step(NICT.start, _HANDLERS)}
_PROTOCOL_ERROR: _Step = compile_step(Transition((Action.PROTOCOL_ERROR,), _TERMINATED), _HANDLERS)


def _ignore_response(_client: ClientTransaction, _response: Response) -> None:
    """The callback of a detached transaction (``ClientTransaction.detach``)."""


def _ignore_end(_client: ClientTransaction, _failure: BaseException | None) -> None:
    """The end callback of a detached transaction (``ClientTransaction.detach``)."""
