"""Server transactions (RFC 3261 §17.2): the IST and NIST machines, each a task of its own.

Theory of operation
-------------------
``TransactionLayer.receive`` makes a :class:`ServerTransaction` for each new request and
starts ``ServerTransaction._run`` as a task named after it in the layer's transactions
nursery. That task opens the transaction's own nursery (``st.nursery``), sends the 100
Trying of an INVITE (§17.2.1), then runs the proxy's ``on_request(st)`` as its body: the
route runs in the transaction's task, and whatever it starts (branches, async ops) runs in
``st.nursery``. When ``on_request`` returns, the same task runs the machine's timers until
the machine terminates; then the nursery closes, which waits for what the proxy left in it.

The timers (G, H, I, J, L) are the deadline of one cancel scope at a time around
``sleep_forever``: the earliest armed timer. ``respond`` (from any task of the transaction)
and ``receive`` (synchronous, from the transport) step the machine and *move* that
deadline: an ACK turning Completed into Confirmed swaps Timer G/H for Timer I with no
wake-up. Retransmitted requests are absorbed in ``receive`` itself, the last response
re-sent with ``send_nowait`` on UDP, so the route never runs twice.

Timers only matter once a final response has been sent, and their deadlines are absolute,
so the loop may start late: an overdue Timer H, I, J or L just fires when it starts. Timer G
is the exception, since it retransmits: if a final that needs it (a non-2xx to an INVITE over
UDP) is sent while ``on_request`` is still running (a proxy waiting for its branches to
end), the same loop runs as a child task of ``st.nursery`` named "<name> timers" instead.
So it does when a response must be re-sent with an awaited send (TCP, or a full UDP socket)
meanwhile. That is the one timer task, and only on those paths; the body then does not run
the loop.

Once a final response is sent and ``on_request`` has returned, the transaction has no work
of its own left, only its timers and absorbing retransmissions: the loop hands it to the
layer (``ServerPort.hold``), whose one timers loop runs the G, H, I, J and L
deadlines of every such transaction, and the task ends as soon as its nursery is empty (at
once, unless branches are still ending). What stays in memory then is lean: the matching
keys, the request's and the last response's bytes, where responses go, and the deadlines;
the parsed request, the responses, the nursery and the task are dropped. ``request``,
``inbound``, ``final_response`` and ``last_response`` are parsed again from the bytes when
asked for (the management interface, a legacy RFC 2543 ACK).

If ``on_request`` returns with no final response sent and nothing running in ``st.nursery``,
nobody can answer: the request is dropped. While no final is sent and no timer is armed,
the loop checks that every 64*T1 as well, so that branches that all ended without a word
cannot leave a transaction behind forever.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Protocol

import trio

from triosip.sip import Request, Response, build_response, parse_message
from triosip.transport.base import Inbound, TransportError, response_destination

from ._errors import TransactionError, TransportFailure
from ._fsm import (
    IST,
    NIST,
    Action,
    ServerInput,
    ServerState,
    Step,
    Transition,
    compile_step,
    compile_table,
    due,
)
from ._port import Counted, TimedPort

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from triosip.transport.base import Address, TcpConnection

    from ._fsm import Machine
    from ._keys import ServerKey

logger = logging.getLogger(__name__)

_TERMINATED = ServerState.TERMINATED
_NOT_ANSWERED = (ServerState.TRYING, ServerState.PROCEEDING)
_ANSWERED = (ServerState.COMPLETED, ServerState.CONFIRMED, ServerState.ACCEPTED)

# Timer G re-sends a final response to an INVITE until the ACK, up to 10 times in 32 s
# (§17.2.1). When that response is larger than the request, a spoofed INVITE would buy
# ten times its size in traffic towards its victim: such a response is re-sent at most
# twice by Timer G (a retransmitted INVITE still gets it again, one for one).
AMPLIFIED_TIMER_G_RETRANSMISSIONS = 2


class ServerPort(TimedPort, Protocol):
    """What a server transaction may ask of its layer (``TransactionLayer`` gives it one)."""

    def handle(self, server: ServerTransaction) -> Awaitable[None]:
        """Run the TU on a new transaction: the layer's ``on_request``."""
        ...

    def pass_stray(self, inbound: Inbound) -> None:
        """Give the TU what the transaction does not keep (an ACK in Accepted)."""
        ...

    def forget_server(self, server: ServerTransaction) -> None:
        """Stop matching requests to ``server`` (§17.2.3): it has terminated."""
        ...

    def task_ended(self, server: ServerTransaction) -> None:
        """The transaction's task has ended (held or terminated)."""
        ...

    def hold(self, server: ServerTransaction) -> None:
        """Take over the timers of ``server``, answered and done with its TU."""
        ...


class ServerTransaction:
    """One INVITE or non-INVITE server transaction (RFC 3261 §17.2).

    The proxy gets it as the argument of ``on_request`` and answers with :meth:`respond`.

    Attributes:
        request: the request that created it.
        inbound: where the request came from (source, local address, TCP connection).
        branch: the top Via branch of the request, or for an RFC 2543 request without one
            "rfc2543-<Call-ID>-<CSeq number>".
        is_invite: IST (True) or NIST (False).
        state: the machine's state.
        name: "IST INVITE z9hG4bK..." or "NIST BYE z9hG4bK..."; also its task's name.
        created_at: ``trio.current_time()`` when it was made.
        nursery: the transaction's own nursery, open from before ``on_request`` is called
            until the transaction's work is done (its final response sent, ``on_request``
            returned, its tasks ended): branches, ops, anything belonging to the
            transaction run here. Unset once its task has ended.
        final_response: the first final response sent, if any.
        last_response: the last response sent (the 100 Trying included), re-sent when the
            request is retransmitted.
        retransmissions_absorbed: request (and ACK) retransmissions absorbed.
        reliable: whether responses go over a reliable transport (TCP).
    """

    __slots__ = (
        "_connection",
        "_deadlines",
        "_destination",
        "_final_bytes",
        "_g_limit",
        "_g_sent",
        "_handler_running",
        "_heap_at",
        "_heap_seq",
        "_held",
        "_interval_g",
        "_keys",
        "_last_bytes",
        "_local",
        "_loop_in_child",
        "_machine",
        "_outbox",
        "_port",
        "_request_bytes",
        "_source",
        "_steps",
        "_task_ended",
        "_timers_task",
        "_wait",
        "_watchdog",
        "branch",
        "created_at",
        "final_response",
        "inbound",
        "is_invite",
        "last_response",
        "name",
        "nursery",
        "reliable",
        "request",
        "retransmissions_absorbed",
        "rfc2543",
        "state",
    )

    nursery: trio.Nursery

    def __init__(
        self,
        port: ServerPort,
        inbound: Inbound,
        request: Request,
        *,
        keys: tuple[ServerKey, ...],
        branch: str,
        rfc2543: bool,
    ) -> None:
        self._port = port
        self._keys = keys
        self.inbound = inbound
        self.request = request
        # A parsed request's bytes are the datagram itself: no copy.
        self._request_bytes = bytes(request)
        self._source = inbound.source
        self._local = inbound.local
        self._connection: TcpConnection | None = inbound.connection
        self.branch = branch
        self.rfc2543 = rfc2543
        self.is_invite = request.method == "INVITE"
        machine = IST if self.is_invite else NIST
        self._machine: Machine[ServerState, ServerInput] = machine
        self._steps = _STEPS[self.is_invite]
        self.state = machine.start.next_state
        self.name = f"{machine.name} {request.method} {branch}"
        self.created_at = port.now()
        self.final_response: Response | None = None
        self.last_response: Response | None = None
        self._final_bytes: bytes | None = None
        self.retransmissions_absorbed = 0
        self._last_bytes: bytes | None = None
        # RFC 3261 §18.2.2 (and RFC 3581): where responses go, worked out once.
        self._destination: Address = response_destination(
            request.top_via, inbound.source, reply_to_via=inbound.reply_to_via
        )
        self.reliable = inbound.connection is not None or self._destination.transport != "udp"
        self._deadlines: dict[ServerInput, float] = {}
        self._interval_g = 0.0
        self._outbox: list[bytes] = []
        self._wait: trio.CancelScope | None = None
        self._watchdog = math.inf
        self._handler_running = False
        self._timers_task = False  # the loop has been started as a child task
        self._loop_in_child = False  # ... and runs now
        self._held = False  # the layer runs its timers (ServerPort.hold)
        self._task_ended = False
        self._heap_at = math.inf  # the layer's timers loop: when it wakes for us ...
        self._heap_seq = 0  # ... and which of its entries is ours
        self._g_sent = 0
        self._g_limit = math.inf

    def __repr__(self) -> str:
        return f"<ServerTransaction {self.name} {self.state.name}>"

    # The parsed messages are read on every message of a call (the proxy's route and
    # responses): plain slots, not properties, which would cost a call each time. They are
    # dropped once the task ends (_release); then __getattr__, which Python calls only for
    # a slot that is not set, reads them from the bytes again, for the rare reader that
    # still wants them. (Hidden from mypy, so that it still checks every other attribute.)
    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> object:
            if name == "request":
                parsed = parse_message(self._request_bytes)
                assert isinstance(parsed, Request)  # these bytes parsed as a request before
                return parsed
            if name == "inbound":
                return Inbound(
                    message=self.request,
                    source=self._source,
                    local=self._local,
                    connection=self._connection,
                )
            if name == "final_response":
                return _parsed(self._final_bytes)
            if name == "last_response":
                return _parsed(self._last_bytes)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def destination(self) -> Address:
        """Where responses are sent (RFC 3261 §18.2.2, RFC 3581)."""
        return self._destination

    @property
    def task(self) -> trio.lowlevel.Task | None:
        """The transaction's task while it runs (the parent of its `nursery`); None before
        it has opened its nursery and once it has ended."""
        try:
            return self.nursery.parent_task
        except AttributeError:  # no nursery yet, or no more (_release)
            return None

    def timer_deadlines(self) -> dict[str, float]:
        """The timers now armed.

        Returns:
            Timer letter ("G", "H", "I", "J", "L") -> its trio deadline.
        """
        return {event.name[-1]: when for event, when in self._deadlines.items()}

    async def respond(self, response: Response) -> None:
        """Send a response from the TU and drive the machine (RFC 3261 §17.2, §18.2.2).

        A 1xx keeps the transaction in (or moves it to) Proceeding; a 2xx to an INVITE
        moves it to Accepted (RFC 6026), where further 2xx (retransmissions coming from
        downstream) may be passed again and are sent; any other final moves it to
        Completed, and for an INVITE over UDP Timer G retransmits it until the ACK.

        Args:
            response: the response to send, its top Via that of the request.

        Raises:
            TransactionError: the machine cannot send this response now (a second final
                response, a provisional after a final, or the transaction has ended);
                nothing was sent and the machine is unchanged.
            TransportFailure: the transport could not send it (RFC 3261 §17.2.4); the
                transaction has informed its TU (this exception) and terminated, except in
                Accepted, where RFC 6026 keeps it.
        """
        data = self._enter_response(response)
        try:
            await self._send(data)
        except TransportError as exc:
            self._transport_error(exc)
            raise TransportFailure(f"{self.name}: {exc}") from exc

    def respond_now(self, response: Response) -> None:
        """`respond` without waiting: the response goes out at once over UDP when the socket
        takes it, else from the transaction's own loop. A transport failure then ends the
        transaction (RFC 3261 §17.2.4) without being raised to the caller: for a proxy
        forwarding a response there is nobody else to tell (§16.7 step 9 has it stop there).

        Raises:
            TransactionError: as `respond`; nothing was sent and the machine is unchanged.
        """
        self._transmit(self._enter_response(response))

    def _enter_response(self, response: Response) -> bytes:
        """Step the machine for a response of the TU; its bytes, to be sent by the caller."""
        # A pair missing from the table is a protocol error (_fsm.py), but here the TU made
        # it: refuse before anything is sent rather than end the transaction for the peer.
        status = response.status
        # server_input_for(), inline (a call per response saved).
        if status < 200:
            event = ServerInput.TU_1XX
        elif status < 300:
            event = ServerInput.TU_2XX
        else:
            event = ServerInput.TU_300_699
        step = self._steps.get((self.state, event))
        if step is None:
            raise TransactionError(
                f"{self.name}: cannot send {response.status} in state {self.state.name}"
            )
        # Serialized once: every retransmission (Timer G, or a retransmitted request) sends
        # these very bytes (§17.2.1 "passed to the transport layer once more").
        data = bytes(response)
        self.last_response = response
        self._last_bytes = data
        if response.status >= 200 and self._final_bytes is None:
            self.final_response = response
            self._final_bytes = data
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s Call-ID %s: sending %d in %s",
                self.name,
                self.request.call_id,
                response.status,
                self.state.name,
            )
        self._apply(step, None)
        if ServerInput.TIMER_G in self._deadlines and not self._held:
            self._ensure_loop()  # Timer G must not wait for on_request to return
        return data

    # --- the task ------------------------------------------------------------------------

    async def _run(self) -> None:
        """The transaction's task: its nursery, ``on_request``, then its timers."""
        port = self._port
        try:
            try:
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    for action in self._machine.start.actions:
                        if action is Action.SEND_TRYING:
                            await self._send_trying()
                        elif action is Action.PASS_REQUEST and self.state is not _TERMINATED:
                            # The route runs right here, not in a coroutine of its own:
                            # each of its resumptions passes every frame down to it.
                            self._handler_running = True
                            returned = False
                            try:
                                await port.handle(self)
                                returned = True
                            except Exception:
                                self._handler_running = False
                                # RFC 3261 §16 has no word for a crashing route; log it
                                # with its traceback, answer 500, and carry on.
                                logger.exception(
                                    "%s Call-ID %s: on_request raised",
                                    self.name,
                                    self.request.call_id,
                                )
                                port.count(Counted.HANDLER_ERROR)
                                await self._answer_500()
                            finally:
                                self._handler_running = False
                                wait = self._wait
                                if wait is not None:
                                    # The loop in a child task may hand over now.
                                    wait.deadline = -math.inf
                            if returned and self.state in _NOT_ANSWERED and not self._tu_tasks():
                                self._drop()
                    if not self._timers_task:
                        if self._may_hold():
                            port.hold(self)  # the usual case: answered, the layer's now
                        else:
                            await self._run_timers()
            except* Exception:
                # A task the TU started in st.nursery raised: the TU's bug. The nursery is
                # gone; answer if nobody did, and let the machine finish on its own.
                logger.exception(
                    "%s Call-ID %s: a task of the transaction failed",
                    self.name,
                    self.request.call_id,
                )
                port.count(Counted.HANDLER_ERROR)
            if self.state is not _TERMINATED and not self._held:
                await self._answer_500()
                await self._run_timers()
        finally:
            # Held: the layer runs what is left (timers, absorbing); otherwise it is over.
            self._task_ended = True
            if not self._held:
                self._terminate()
            self._release()
            port.task_ended(self)

    def _release(self) -> None:
        # What only the task and the TU needed: the parsed request and responses, the
        # nursery (and through it the task). The bytes stay (properties above).
        del self.request, self.inbound
        if self.final_response is not None:
            del self.final_response
        if self.last_response is not None:
            del self.last_response
        try:  # noqa: SIM105 - contextlib.suppress costs two calls on every transaction
            del self.nursery
        except AttributeError:  # ended before its nursery opened
            pass

    async def _send_trying(self) -> None:
        # RFC 3261 §17.2.1: "send 100 if TU won't in 200 ms"; a proxy can never know it
        # will, so the 100 goes at once, before the route runs (§16.2 also allows it).
        trying = build_response(self.request, 100)
        self.last_response = trying
        self._last_bytes = data = bytes(trying)
        transport = self._port.transport
        local = self._local
        # _send(), inline: UDP goes out at once, with nothing to await.
        if self.reliable or not transport.send_nowait(data, self._destination, local=local):
            try:
                await transport.send(
                    data, self._destination, connection=self._connection, local=local
                )
            except TransportError as exc:
                self._transport_error(exc)

    async def _answer_500(self) -> None:
        if self.final_response is not None or self.state is _TERMINATED:
            return
        try:
            await self.respond(build_response(self.request, 500))
        except TransactionError as exc:
            logger.info(
                "%s Call-ID %s: could not send 500: %s", self.name, self.request.call_id, exc
            )

    def _tu_tasks(self) -> int:
        # What the TU runs in st.nursery: its tasks, not our timers task.
        return len(self.nursery.child_tasks) - self._loop_in_child

    def _ensure_loop(self) -> None:
        # The machine needs its loop now (Timer G armed, or a send to await), but the
        # transaction's task is busy in on_request: run the loop in a child task.
        if self._handler_running and not self._timers_task:
            self._timers_task = self._loop_in_child = True
            self.nursery.start_soon(self._run_loop_in_child, name=f"{self.name} timers")

    async def _run_loop_in_child(self) -> None:
        try:
            await self._run_timers()
        finally:
            self._loop_in_child = False

    def _drop(self) -> None:
        logger.info("%s Call-ID %s: dropped, nothing answered it", self.name, self.request.call_id)
        self._port.count(Counted.DROPPED)
        self._terminate()

    async def _run_timers(self) -> None:
        if self._may_hold():
            # The usual case, answered while on_request ran: straight to the layer (below).
            self._port.hold(self)
            return
        clock = self._port.now
        period = self._port.timers.timer_h
        self._watchdog = clock() + period
        while self.state is not _TERMINATED:
            if self._may_hold():
                # Answered, and on_request has returned: the layer's one timers loop
                # takes over, and the task ends when its nursery is empty.
                self._port.hold(self)
                return
            deadline = self._next_deadline()
            # Already due (a 0 s timer on TCP, an overdue one): no scope to open for it.
            if deadline > clock():
                with trio.move_on_at(deadline) as self._wait:
                    await trio.sleep_forever()
                self._wait = None
            await self._drain()
            # Every due timer is an input of the machine, in deadline order.
            now = clock()
            for event, _ in due(self._deadlines, now):
                if event in self._deadlines:  # an earlier one may have dropped it
                    del self._deadlines[event]
                    self._step(event, None)
            if self.state in _NOT_ANSWERED and now >= self._watchdog:
                if self._handler_running or self._tu_tasks():
                    self._watchdog = now + period
                else:
                    self._drop()
            await self._drain()

    def _may_hold(self) -> bool:
        return (
            not self._handler_running
            and not self._outbox
            and not self._held
            and self.state in _ANSWERED
        )

    def _is_over(self) -> bool:
        return self.state is _TERMINATED

    def _fire_timers(self, now: float) -> None:
        """The layer's timers loop woke for this held transaction: fire what is due."""
        deadlines = self._deadlines
        for event, _ in due(deadlines, now):
            if event in deadlines:  # an earlier one may have dropped it
                del deadlines[event]
                self._step(event, None)
        if self.state is not _TERMINATED:
            self._port.schedule(self)

    # --- the machine ---------------------------------------------------------------------

    def _receive(self, inbound: Inbound, event: ServerInput) -> None:
        """A retransmitted request or an ACK matched this transaction (§17.2.3).

        Synchronous, from the transport: the request is absorbed here, never passed to the
        route again; the last response is re-sent where the machine says so.
        """
        if event is ServerInput.REQUEST or self.state is ServerState.CONFIRMED:
            self.retransmissions_absorbed += 1
            self._port.count(Counted.RETRANSMISSION_ABSORBED)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s Call-ID %s: %s received in %s",
                self.name,
                self.request.call_id,
                "ACK" if event is ServerInput.ACK else "retransmission",
                self.state.name,
            )
        self._step(event, inbound)

    def _step(self, event: ServerInput, inbound: Inbound | None) -> None:
        step = self._steps.get((self.state, event))
        # A pair missing from the table is a protocol error (_fsm.py, Machine.step).
        self._apply(_PROTOCOL_ERROR if step is None else step, inbound)

    def _apply(self, step: _Step, inbound: Inbound | None) -> None:
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
        # One clock read for the transition, and only if it arms a timer.
        now = self._port.now() if timed else 0.0
        for handler in handlers:
            handler(self, inbound, now)
        if self.state is _TERMINATED:
            self._terminate()
        elif self._held and (changed or timed):
            self._port.schedule(self)  # the timers changed: the layer's loop wakes for them
        wait = self._wait
        if wait is not None:
            wait.deadline = self._next_deadline()

    # The actions (``_fsm.Action``), one handler each; ``_HANDLERS`` below maps them. The
    # 100 Trying and passing the request up are run()'s own; a response of the TU is sent
    # by respond(), so that its caller learns of a transport failure (which respond()
    # raises, and a timer's resend has logged).

    def _resend_response(self, inbound: Inbound | None, now: float) -> None:
        if self._last_bytes is not None:  # None: the 100 Trying is not out yet
            self._port.count(Counted.RETRANSMISSION_SENT)
            self._transmit(self._last_bytes)

    def _pass_ack(self, inbound: Inbound | None, now: float) -> None:
        # RFC 6026 §8.7: the ACK of a 2xx belongs to the TU; a proxy forwards it.
        assert inbound is not None
        self._port.pass_stray(inbound)

    def _start_timer_g(self, inbound: Inbound | None, now: float) -> None:
        # §17.2.1: "For unreliable transports, timer G is set to fire in T1 seconds".
        if not self.reliable:
            self._interval_g = self._port.timers.timer_g
            self._deadlines[ServerInput.TIMER_G] = now + self._interval_g
            if len(self._last_bytes or b"") > len(self._request_bytes):
                self._g_limit = AMPLIFIED_TIMER_G_RETRANSMISSIONS

    def _double_timer_g(self, inbound: Inbound | None, now: float) -> None:
        # §17.2.1: MIN(2*T1, T2), then doubling, capped at T2; not re-armed once a
        # response larger than its request has been re-sent its share.
        self._g_sent += 1
        if self._g_sent < self._g_limit:
            self._interval_g = min(2 * self._interval_g, self._port.timers.t2)
            self._deadlines[ServerInput.TIMER_G] = now + self._interval_g

    def _start_timer_h(self, inbound: Inbound | None, now: float) -> None:
        self._deadlines[ServerInput.TIMER_H] = now + self._port.timers.timer_h

    def _start_timer_i(self, inbound: Inbound | None, now: float) -> None:
        self._deadlines[ServerInput.TIMER_I] = now + self._port.timers.timer_i(self.reliable)

    def _start_timer_j(self, inbound: Inbound | None, now: float) -> None:
        self._deadlines[ServerInput.TIMER_J] = now + self._port.timers.timer_j(self.reliable)

    def _start_timer_l(self, inbound: Inbound | None, now: float) -> None:
        self._deadlines[ServerInput.TIMER_L] = now + self._port.timers.timer_l

    def _inform_tu_timeout(self, inbound: Inbound | None, now: float) -> None:
        # Timer H: the UAC never ACKed our final. Normal when a phone vanishes: INFO.
        self._port.count(Counted.TIMEOUT)
        logger.info("%s Call-ID %s: Timer H fired, no ACK", self.name, self.request.call_id)

    def _protocol_error(self, inbound: Inbound | None, now: float) -> None:
        logger.warning(
            "%s Call-ID %s: protocol error in %s",
            self.name,
            self.request.call_id,
            self.state.name,
        )

    def _terminate(self) -> None:
        # §17.2.1/§17.2.2: a terminated transaction "MUST be destroyed": it no longer matches.
        if self.state is not _TERMINATED:
            self.state = _TERMINATED
        self._deadlines.clear()
        self._outbox.clear()
        self._port.forget_server(self)
        wait = self._wait
        if wait is not None:
            wait.deadline = -math.inf

    def _transport_error(self, exc: TransportError) -> None:
        logger.info("%s Call-ID %s: transport error: %s", self.name, self.request.call_id, exc)
        self._step(ServerInput.TRANSPORT_ERROR, None)

    # --- sending -------------------------------------------------------------------------

    def _next_deadline(self) -> float:
        if self._outbox or self.state is _TERMINATED:
            return -math.inf
        if self._deadlines:
            return min(self._deadlines.values())
        if self.state in _NOT_ANSWERED:
            return self._watchdog
        return math.inf

    # RFC 3581 §4: a response goes out from the address and port the request came to
    # (``local``), so that it passes the NAT the request came through.

    async def _send(self, data: bytes) -> None:
        transport = self._port.transport
        local = self._local
        if self.reliable or not transport.send_nowait(data, self._destination, local=local):
            await transport.send(data, self._destination, connection=self._connection, local=local)

    def _transmit(self, data: bytes) -> None:
        # UDP goes out synchronously; anything else waits for the transaction's task, or
        # once held for the layer's timers loop.
        transport = self._port.transport
        if self.reliable or not transport.send_nowait(data, self._destination, local=self._local):
            if self._held:
                self._port.send_later(data, self._destination, self._local, self._connection, self)
                return
            self._outbox.append(data)
            wait = self._wait
            if wait is not None:
                wait.deadline = -math.inf
            else:
                self._ensure_loop()

    async def _drain(self) -> None:
        while self._outbox and self.state is not _TERMINATED:
            data = self._outbox.pop(0)
            try:
                await self._port.transport.send(
                    data, self._destination, connection=self._connection, local=self._local
                )
            except TransportError as exc:
                self._outbox.clear()
                self._transport_error(exc)


if TYPE_CHECKING:
    _Handler = Callable[[ServerTransaction, Inbound | None, float], None]
    _Step = Step[ServerState, _Handler]

_HANDLERS: dict[Action, _Handler | None] = {
    Action.SEND_RESPONSE: None,  # respond() sends it
    Action.RESEND_RESPONSE: ServerTransaction._resend_response,
    Action.PASS_ACK: ServerTransaction._pass_ack,
    Action.START_TIMER_G: ServerTransaction._start_timer_g,
    Action.DOUBLE_TIMER_G: ServerTransaction._double_timer_g,
    Action.START_TIMER_H: ServerTransaction._start_timer_h,
    Action.START_TIMER_I: ServerTransaction._start_timer_i,
    Action.START_TIMER_J: ServerTransaction._start_timer_j,
    Action.START_TIMER_L: ServerTransaction._start_timer_l,
    Action.INFORM_TU_TIMEOUT: ServerTransaction._inform_tu_timeout,
    Action.INFORM_TU_TRANSPORT_ERROR: None,  # respond() raises it; a resend has logged it
    Action.PROTOCOL_ERROR: ServerTransaction._protocol_error,
}

# Each machine's table, compiled once (_fsm.compile_table), by is_invite.
_STEPS = {True: compile_table(IST, _HANDLERS), False: compile_table(NIST, _HANDLERS)}
_PROTOCOL_ERROR: _Step = compile_step(Transition((Action.PROTOCOL_ERROR,), _TERMINATED), _HANDLERS)


def _parsed(data: bytes | None) -> Response | None:
    if data is None:
        return None
    response = parse_message(data)
    assert isinstance(response, Response)  # built by us, serialized once
    return response
