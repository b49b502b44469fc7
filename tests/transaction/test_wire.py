"""The transaction layer over the real transport, on 127.0.0.1, with a plain UDP socket as peer.

Real time here (sockets), with small timers so that the whole exchange takes a fraction of
a second; every test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import trio
import trio.testing

from triosip.sip import Request, Response, StreamParser, build_response, parse_message
from triosip.transaction import (
    ClientTransaction,
    ServerState,
    ServerTransaction,
    TimerConfig,
    TransactionLayer,
)
from triosip.transport import Address, TransportLayer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from triosip.sip import ParseError
    from triosip.transport import Inbound

# T1 50 ms: Timer G/E fire at 50, 150, 350 ms; T4 100 ms: Timer I/K last 100 ms.
TIMERS = TimerConfig(t1=0.05, t2=0.2, t4=0.1)


def invite_from(port: int, branch: str = "z9hG4bKwire1", transport: str = "UDP") -> bytes:
    return (
        "INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "To: <sip:bob@127.0.0.1>\r\n"
        "From: <sip:alice@127.0.0.1>;tag=wire\r\n"
        "Call-ID: wire-1@127.0.0.1\r\n"
        "CSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n"
        "\r\n"
    ).encode()


def ack_from(port: int, to_tag: str, branch: str = "z9hG4bKwire1", transport: str = "UDP") -> bytes:
    return (
        "ACK sip:bob@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"To: <sip:bob@127.0.0.1>;tag={to_tag}\r\n"
        "From: <sip:alice@127.0.0.1>;tag=wire\r\n"
        "Call-ID: wire-1@127.0.0.1\r\n"
        "CSeq: 1 ACK\r\n"
        "Content-Length: 0\r\n"
        "\r\n"
    ).encode()


class Stack:
    """A transport and a transaction layer wired together, as the proxy core wires them."""

    def __init__(
        self, on_request: Callable[[ServerTransaction], Awaitable[None]], transport: str = "udp"
    ) -> None:
        self.strays: list[Inbound] = []
        self.parse_errors: list[ParseError] = []
        self.transport = TransportLayer(
            [Address(transport, "127.0.0.1", 0)],
            on_message=self._on_message,
            on_parse_error=lambda error, data, source, local: self.parse_errors.append(error),
        )
        self.layer = TransactionLayer(
            self.transport,
            timers=TIMERS,
            on_request=on_request,
            on_stray=self.strays.append,
        )

    def _on_message(self, inbound: Inbound) -> None:
        self.layer.receive(inbound)

    async def start(self, nursery: trio.Nursery) -> Address:
        listeners: list[Address] = await nursery.start(self.transport.serve)
        (listener,) = listeners
        await nursery.start(self.layer.serve)
        return listener


def _state(st: ServerTransaction) -> ServerState:
    return st.state


async def receive(sock: trio.socket.SocketType) -> Request | Response:
    data, _ = await sock.recvfrom(65535)
    return parse_message(data)


async def test_invite_server_transaction_on_the_wire() -> None:
    runs: list[str] = []

    async def on_request(st: ServerTransaction) -> None:
        runs.append(st.name)
        await st.respond(build_response(st.request, 486, to_tag="uas"))

    stack = Stack(on_request)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            listener = await stack.start(nursery)
            peer = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with peer:
                await peer.bind(("127.0.0.1", 0))
                port = peer.getsockname()[1]
                proxy = (listener.host, listener.port)
                await peer.sendto(invite_from(port), proxy)
                first = await receive(peer)
                assert isinstance(first, Response)
                assert first.status == 100  # at once, before the route's answer
                final = await receive(peer)
                assert isinstance(final, Response)
                assert final.status == 486
                # A retransmitted INVITE gets the 486 again; the route does not run again.
                await peer.sendto(invite_from(port), proxy)
                statuses = set()
                with trio.move_on_after(0.4):  # Timer G retransmits meanwhile, too
                    while True:
                        again = await receive(peer)
                        assert isinstance(again, Response)
                        statuses.add(again.status)
                assert statuses == {486}
                (st,) = stack.layer.server_transactions()
                assert st.state is ServerState.COMPLETED  # (read again below, after I/O)
                await peer.sendto(ack_from(port, "uas"), proxy)
                # No more 486 once the ACK is in (Timer G would resend within 200 ms)...
                with trio.move_on_after(0.3):
                    late = await receive(peer)
                    raise AssertionError(f"unexpected {late!r}")
                # ... and Timer I (T4, 100 ms) has ended it; its task is gone.
                assert _state(st) is ServerState.TERMINATED
                assert stack.layer.server_transactions() == []
            nursery.cancel_scope.cancel()
    assert runs == ["IST INVITE z9hG4bKwire1"]
    assert stack.strays == []
    assert stack.parse_errors == []


async def test_non_invite_client_transaction_on_the_wire() -> None:
    async def on_request(st: ServerTransaction) -> None:
        raise AssertionError("the peer sends no request")

    stack = Stack(on_request)
    responses: list[int] = []

    def on_response(client: ClientTransaction, response: Response) -> None:
        responses.append(response.status)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            listener = await stack.start(nursery)
            peer = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with peer:
                await peer.bind(("127.0.0.1", 0))
                port = peer.getsockname()[1]
                branch = stack.layer.new_branch()
                options = parse_message(
                    (
                        "OPTIONS sip:peer@127.0.0.1 SIP/2.0\r\n"
                        f"Via: SIP/2.0/UDP {listener.host_port};branch={branch}\r\n"
                        "Max-Forwards: 70\r\n"
                        "To: <sip:peer@127.0.0.1>\r\n"
                        "From: <sip:proxy@127.0.0.1>;tag=p\r\n"
                        "Call-ID: wire-2@127.0.0.1\r\n"
                        "CSeq: 7 OPTIONS\r\n"
                        "Content-Length: 0\r\n"
                        "\r\n"
                    ).encode()
                )
                assert isinstance(options, Request)
                start = trio.current_time()
                async with trio.open_nursery() as branches:
                    client = await branches.start(
                        _run_client,
                        stack.layer,
                        options,
                        Address("udp", "127.0.0.1", port),
                        on_response,
                    )
                    received = await receive(peer)
                    retransmitted = await receive(peer)  # Timer E, T1 later: not answered
                    assert trio.current_time() - start >= TIMERS.t1
                    assert isinstance(received, Request)
                    assert bytes(retransmitted) == bytes(received)
                    ok = build_response(received, 200, to_tag="peer")
                    await peer.sendto(bytes(ok), (listener.host, listener.port))
                    await peer.sendto(bytes(ok), (listener.host, listener.port))  # absorbed
                # run_client returned: Timer K (T4) after the 200.
                assert trio.current_time() - start >= TIMERS.t1 + TIMERS.t4
                assert client.retransmissions >= 1
                assert stack.layer.client_transactions() == []
            nursery.cancel_scope.cancel()
    assert responses == [200]
    assert stack.strays == []


async def _run_client(
    layer: TransactionLayer,
    request: Request,
    destination: Address,
    on_response: Callable[[ClientTransaction, Response], None],
    *,
    task_status: trio.TaskStatus[ClientTransaction] = trio.TASK_STATUS_IGNORED,
) -> None:
    await layer.run_client(
        request,
        destination,
        on_response=on_response,
        task_status=task_status,
    )


async def test_invite_server_transaction_over_tcp() -> None:
    async def on_request(st: ServerTransaction) -> None:
        await st.respond(build_response(st.request, 486, to_tag="uas"))

    stack = Stack(on_request, "tcp")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            listener = await stack.start(nursery)
            stream = await trio.open_tcp_stream(listener.host, listener.port)
            async with stream:
                port = stream.socket.getsockname()[1]
                parser = StreamParser()

                async def next_message() -> Request | Response:
                    while (message := parser.next_message()) is None:
                        parser.feed(await stream.receive_some())
                    return message

                await stream.send_all(invite_from(port, transport="TCP"))
                trying, final = await next_message(), await next_message()
                assert isinstance(trying, Response)
                assert isinstance(final, Response)
                assert (trying.status, final.status) == (100, 486)  # on the same connection
                (st,) = stack.layer.server_transactions()
                assert st.reliable
                assert st.timer_deadlines().keys() == {"H"}  # no Timer G over TCP
                await stream.send_all(ack_from(port, "uas", transport="TCP"))
                # Once the ACK is read, Timer I (0 over TCP) ends the transaction at once.
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                assert _state(st) is ServerState.TERMINATED
                assert stack.layer.server_transactions() == []
            nursery.cancel_scope.cancel()
    assert stack.parse_errors == []
