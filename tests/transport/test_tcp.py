"""TCP: framing, connection reuse, idle close, bounds; real sockets on 127.0.0.1 and ::1."""

from __future__ import annotations

import functools
import itertools
import socket
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from tests.support.transport import (
    ipv6_loopback_works,
    peer_address,
    request,
    response,
    start_layer,
)
from triosip.sip import Response
from triosip.transport import Address, TransportError, TransportLayer, TransportLimits

if TYPE_CHECKING:
    from collections.abc import Callable

ERROR_LINGER = 2.0  # triosip.transport._tcp.ERROR_LINGER


async def tcp_peer(local: Address) -> trio.SocketStream:
    return await trio.open_tcp_stream(local.host, local.port)


async def receive_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return data


async def receive_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the peer sends until it closes (a close with unread data is a reset)."""
    data = b""
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll what has no event to wait on (the layer's counters); fail_after bounds it."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(0.001)


def bytes_read(layer: TransportLayer, total: int) -> bool:
    return layer.statistics().tcp_bytes_received == total


async def peer_listener() -> tuple[trio.SocketListener, Address]:
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    name = listener.socket.getsockname()
    return listener, Address("tcp", name[0], name[1])


# --- framing ---------------------------------------------------------------------------


async def test_several_messages_in_one_write(nursery: trio.Nursery) -> None:
    with trio.fail_after(5):
        layer, recorder, [local] = await start_layer(nursery, "tcp:127.0.0.1:0")
        async with await tcp_peer(local) as stream:
            body = b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\n"
            await stream.send_all(
                request(call_id="m1")
                + request("INVITE", call_id="m2", body=body)
                + response(call_id="m3")
            )
            got = [await recorder.next_message() for _ in range(3)]
            source = peer_address(stream.socket, "tcp")

        assert [inbound.message.call_id for inbound in got] == ["m1", "m2", "m3"]
        assert got[1].message.body == body
        assert isinstance(got[2].message, Response)
        connection = got[0].connection
        assert connection is not None
        assert all(inbound.connection is connection for inbound in got)
        assert all(inbound.source == source and inbound.local == local for inbound in got)
        assert (connection.peer, connection.local, connection.outbound) == (source, local, False)
        stats = layer.statistics()
        assert stats.tcp_messages_received == 3
        assert stats.tcp_connections_accepted == 1


async def test_one_message_split_across_writes(nursery: trio.Nursery) -> None:
    with trio.fail_after(5):
        layer, recorder, [local] = await start_layer(nursery, "tcp:127.0.0.1:0")
        message = request("INVITE", body=b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\n")
        cuts = [0, 7, 150, len(message) - 10, len(message) - 1, len(message)]
        async with await tcp_peer(local) as stream:
            for start, end in itertools.pairwise(cuts[:-1]):
                await stream.send_all(message[start:end])
                # The layer has read the piece, and has nothing to hand up yet.
                await wait_until(functools.partial(bytes_read, layer, end))
                assert recorder.pending_messages() == 0
            await stream.send_all(message[cuts[-2] :])
            inbound = await recorder.next_message()
        assert bytes(inbound.message) == message
        assert recorder.pending_messages() == 0


async def test_non_fatal_parse_error_keeps_the_connection(nursery: trio.Nursery) -> None:
    with trio.fail_after(5):
        layer, recorder, [local] = await start_layer(nursery, "tcp:127.0.0.1:0")
        # Framed by its Content-Length, but it has no Call-ID.
        no_call_id = request().replace(b"Call-ID: a84b4c76e66710@pc33.example.com\r\n", b"")
        async with await tcp_peer(local) as stream:
            await stream.send_all(no_call_id + request(call_id="after"))
            bad = await recorder.next_error()
            assert not bad.error.fatal
            assert bad.source == peer_address(stream.socket, "tcp")
            inbound = await recorder.next_message()
            assert inbound.message.call_id == "after"
            assert inbound.connection is not None
            assert inbound.connection.alive
        assert layer.statistics().parse_errors == 1


@pytest.mark.parametrize(
    "oversize",
    [
        request(body=b"x" * 2000),  # the Content-Length says too much
        b"OPTIONS sip:bob@example.com SIP/2.0\r\nSubject: " + b"y" * 2000,  # headers never end
    ],
    ids=["body", "headers"],
)
async def test_oversize_message_is_answered_then_the_connection_closes(
    nursery: trio.Nursery, oversize: bytes
) -> None:
    with trio.fail_after(5):
        limits = TransportLimits(max_message_size=1000)
        layer, recorder, [local] = await start_layer(nursery, "tcp:127.0.0.1:0", limits=limits)
        async with await tcp_peer(local) as stream:
            await stream.send_all(oversize)
            bad = await recorder.next_error()
            assert bad.error.status == 413
            assert bad.error.fatal
            # The layer above answers, addressing the source: the lingering connection
            # carries it, then closes.
            answer = response(413)
            await layer.send(answer, bad.source)
            assert await receive_until_closed(stream) == answer
        await wait_until(lambda: layer.statistics().tcp_connections_closed == 1)
        assert layer.statistics().tcp_connections_open == 0
        assert layer.statistics().tcp_connections_connected == 0


async def test_unanswered_fatal_error_closes_after_the_linger(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        limits = TransportLimits(max_message_size=1000)
        _, recorder, [local] = await start_layer(nursery, "tcp:127.0.0.1:0", limits=limits)
        async with await tcp_peer(local) as stream:
            await stream.send_all(request(body=b"x" * 2000))
            await recorder.next_error()
            errored = trio.current_time()
            assert await receive_until_closed(stream) == b""
            assert trio.current_time() == pytest.approx(errored + ERROR_LINGER)
        assert recorder.pending_messages() == 0


async def test_crlf_ping_gets_a_pong(nursery: trio.Nursery) -> None:
    with trio.fail_after(5):
        layer, recorder, [local] = await start_layer(nursery, "tcp:127.0.0.1:0")
        async with await tcp_peer(local) as stream:
            await stream.send_all(b"\r\n\r\n")
            assert await receive_exactly(stream, 2) == b"\r\n"
            await stream.send_all(request())
            assert (await recorder.next_message()).message.call_id
        assert layer.statistics().keepalives_received == 1
        assert recorder.pending_errors() == 0


# --- reuse -------------------------------------------------------------------------------


async def test_replies_and_requests_to_a_peer_reuse_its_connection(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(5):
        layer, recorder, [local] = await start_layer(nursery, "tcp:127.0.0.1:0")
        async with await tcp_peer(local) as stream:
            await stream.send_all(request("INVITE"))
            inbound = await recorder.next_message()

            # RFC 3261 §18.2.2: the response goes back on the connection, whatever the
            # destination (here one that does not exist) says.
            nowhere = Address("tcp", "192.0.2.1", 5060)
            await layer.send(response(100), nowhere, connection=inbound.connection)
            assert await receive_exactly(stream, len(response(100))) == response(100)

            # Without the connection, the peer's address finds it: a request back to the
            # peer's source ip:port is sent on the connection it opened.
            await layer.send(request("BYE", call_id="back"), inbound.source)
            assert await receive_exactly(stream, len(request("BYE", call_id="back"))) == (
                request("BYE", call_id="back")
            )
        stats = layer.statistics()
        assert stats.tcp_connections_connected == 0
        assert stats.tcp_connections_accepted == 1
        assert stats.tcp_messages_sent == 2


async def test_sends_to_one_destination_share_one_outbound_connection(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(5):
        layer, recorder, [local] = await start_layer(nursery, "tcp:127.0.0.1:0")
        listener, destination = await peer_listener()
        async with listener:
            # Two at once (one connection attempt, shared), then one more (reused).
            async with trio.open_nursery() as senders:
                senders.start_soon(layer.send, request(call_id="first"), destination)
                senders.start_soon(layer.send, request(call_id="secnd"), destination)
            await layer.send(request(call_id="third"), destination)
            async with await listener.accept() as stream:
                data = await receive_exactly(stream, 3 * len(request(call_id="third")))
                for call_id in ("first", "secnd", "third"):
                    assert data.count(f"Call-ID: {call_id}\r\n".encode()) == 1
                assert data.endswith(request(call_id="third"))

                # The outbound connection is read too: the answer comes back up on it.
                await stream.send_all(response(call_id="third"))
                inbound = await recorder.next_message()
                assert inbound.message.call_id == "third"
                assert inbound.source == destination
                assert inbound.connection is not None
                assert inbound.connection.outbound
                assert inbound.connection.peer == destination
                host, port = stream.socket.getpeername()[:2]
                assert inbound.local == Address("tcp", host, port)
        stats = layer.statistics()
        assert stats.tcp_connections_connected == 1
        assert stats.tcp_messages_sent == 3
        assert local.port != destination.port


async def test_concurrent_sends_on_one_connection_do_not_interleave(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(10):
        layer, _, _ = await start_layer(nursery, "tcp:127.0.0.1:0")
        listener, destination = await peer_listener()
        messages = [
            request(call_id=f"big-{n:02}", body=bytes([65 + n]) * 50_000) for n in range(20)
        ]
        async with listener, trio.open_nursery() as senders:
            for message in messages:
                senders.start_soon(layer.send, message, destination)
            async with await listener.accept() as stream:
                data = await receive_exactly(stream, sum(map(len, messages)))
        # Each message arrived whole: the stream is the messages in some order.
        received = []
        rest = data
        while rest:
            message = next(m for m in messages if rest.startswith(m))
            received.append(message)
            rest = rest[len(message) :]
        assert sorted(received) == sorted(messages)
        assert layer.statistics().tcp_connections_connected == 1


async def test_connection_refused_is_a_transport_error(nursery: trio.Nursery) -> None:
    with trio.fail_after(5):
        layer, _, _ = await start_layer(nursery, "tcp:127.0.0.1:0")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]  # bound, not listening: connections are refused
            with pytest.raises(
                TransportError, match=f"cannot connect to tcp:127.0.0.1:{port}: connection refused"
            ) as caught:
                await layer.send(request(), Address("tcp", "127.0.0.1", port))
            # RFC 3261 §18.1.1: a refusal (TCP reset) is told apart, for the UDP retry.
            assert caught.value.refused
        stats = layer.statistics()
        assert stats.tcp_connect_failures == 1
        assert stats.tcp_connections_open == 0


async def test_connect_timeout_is_a_transport_error(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        limits = TransportLimits(tcp_connect_timeout=7)
        layer, _, _ = await start_layer(nursery, "tcp:127.0.0.1:0", limits=limits)
        # A listener that never accepts, its backlog full: the kernel drops further SYNs.
        with socket.socket() as full:
            full.bind(("127.0.0.1", 0))
            full.listen(0)
            address = full.getsockname()
            fillers = []
            try:
                for _ in range(4):
                    filler = socket.socket()
                    filler.setblocking(False)
                    fillers.append(filler)
                    filler.connect_ex(address)
                start = trio.current_time()
                with pytest.raises(TransportError, match="timed out after 7 s") as caught:
                    await layer.send(request(), Address("tcp", *address))
                assert not caught.value.refused
                assert trio.current_time() == pytest.approx(start + 7)
            finally:
                for filler in fillers:
                    filler.close()
        assert layer.statistics().tcp_connect_failures == 1


async def test_unsupported_transport_is_a_transport_error(nursery: trio.Nursery) -> None:
    with trio.fail_after(5):
        layer, _, _ = await start_layer(nursery, "tcp:127.0.0.1:0")
        with pytest.raises(TransportError, match="transport tls is not supported"):
            await layer.send(request(), Address("tls", "127.0.0.1", 5061))


# --- lifetime and bounds -------------------------------------------------------------------


async def test_idle_connection_is_closed_and_traffic_moves_the_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(500):
        limits = TransportLimits(tcp_idle_timeout=30)
        layer, recorder, [local] = await start_layer(nursery, "tcp:127.0.0.1:0", limits=limits)
        async with await tcp_peer(local) as stream:
            start = trio.current_time()
            await stream.send_all(request())
            inbound = await recorder.next_message()
            await trio.sleep(20)
            await stream.send_all(request(call_id="received-at-20"))
            await recorder.next_message()
            await trio.sleep(20)
            await layer.send(response(), inbound.source, connection=inbound.connection)
            assert await receive_exactly(stream, len(response())) == response()
            # Last traffic at 40 s: closed at 70 s.
            assert await stream.receive_some(100) == b""
            assert trio.current_time() == pytest.approx(start + 70)
        assert inbound.connection is not None
        assert not inbound.connection.alive
        stats = layer.statistics()
        assert stats.tcp_connections_idle_closed == 1
        assert stats.tcp_connections_closed == 1
        assert stats.tcp_connections_open == 0


async def test_max_connections_evicts_the_oldest_idle_or_refuses(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        limits = TransportLimits(tcp_max_connections=2)
        layer, recorder, [local] = await start_layer(nursery, "tcp:127.0.0.1:0", limits=limits)
        listener, destination = await peer_listener()
        a = await tcp_peer(local)
        b = await tcp_peer(local)
        c = await tcp_peer(local)
        async with a, b, c, listener:
            await a.send_all(request(call_id="a"))
            await recorder.next_message()
            await b.send_all(request(call_id="b"))
            inbound_b = await recorder.next_message()
            # Both busy a moment ago: the third is refused, and so is an outbound one.
            await wait_until(lambda: layer.statistics().tcp_connections_refused == 1)
            assert await c.receive_some(100) == b""
            with pytest.raises(TransportError, match="all 2 TCP connections are busy"):
                await layer.send(request(), destination)

            await trio.sleep(5)
            await b.send_all(request(call_id="b2"))
            await recorder.next_message()
            # a is the least recently used, idle for 5 s: it makes room for e.
            e = await tcp_peer(local)
            async with e:
                await e.send_all(request(call_id="e"))
                assert (await recorder.next_message()).message.call_id == "e"
                assert await a.receive_some(100) == b""
                await layer.send(response(call_id="b"), inbound_b.source)
                assert await receive_exactly(b, len(response(call_id="b"))) == response(call_id="b")
                stats = layer.statistics()
                assert stats.tcp_connections_refused == 2
                assert stats.tcp_connections_evicted == 1
                assert stats.tcp_connections_open == 2


async def test_stopping_closes_connections() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            layer, recorder, [local] = await start_layer(nursery, "tcp:127.0.0.1:0")
            stream = await tcp_peer(local)
            await stream.send_all(request())
            await recorder.next_message()
            nursery.cancel_scope.cancel()
        async with stream:
            assert await stream.receive_some(100) == b""
        assert layer.listeners == ()


async def test_ipv6_round_trip(nursery: trio.Nursery) -> None:
    assert ipv6_loopback_works(), "::1 cannot be bound on this machine"
    with trio.fail_after(5):
        layer, recorder, [v6] = await start_layer(nursery, "tcp:[::1]:0")
        assert v6.host == "::1"
        assert layer.local_address("tcp", family_of="::1") == v6
        async with await tcp_peer(v6) as stream:
            await stream.send_all(request(via="SIP/2.0/TCP [::1]:5070;branch=z9hG4bK6"))
            inbound = await recorder.next_message()
            assert inbound.source == peer_address(stream.socket, "tcp")
            assert inbound.source.is_ipv6
            assert inbound.local == v6
            await layer.send(response(), inbound.source)
            assert await receive_exactly(stream, len(response())) == response()
