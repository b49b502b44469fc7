"""UDP: real datagrams on 127.0.0.1 and ::1, through a real `TransportLayer`."""

from __future__ import annotations

import socket

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
from triosip.sip import ParseError, Request, Response
from triosip.transport import Address, TransportError, TransportLimits


async def udp_peer(host: str = "127.0.0.1") -> trio.socket.SocketType:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_DGRAM)
    await sock.bind((host, 0))
    return sock


async def test_round_trip(nursery: trio.Nursery) -> None:
    with trio.fail_after(5):
        layer, recorder, [local] = await start_layer(nursery, "udp:127.0.0.1:0")
        assert local.transport == "udp"
        assert local.port != 0
        assert layer.listeners == (local,)
        with await udp_peer() as peer:
            await peer.sendto(request("INVITE"), (local.host, local.port))
            inbound = await recorder.next_message()
            assert isinstance(inbound.message, Request)
            assert inbound.message.method == "INVITE"
            assert inbound.message.call_id == "a84b4c76e66710@pc33.example.com"
            assert inbound.source == peer_address(peer, "udp")
            assert inbound.local == local
            assert inbound.connection is None

            # The answer leaves from the listener's own socket: its source port is the
            # listener's port (RFC 3581 relies on it).
            await layer.send(response(180), inbound.source)
            data, sender = await peer.recvfrom(65535)
            assert data == response(180)
            assert (sender[0], sender[1]) == (local.host, local.port)

            assert layer.send_nowait(response(200), inbound.source)
            data, sender = await peer.recvfrom(65535)
            assert data == response(200)
            assert sender[1] == local.port

            # And a response coming in is handed up as one.
            await peer.sendto(response(200), (local.host, local.port))
            inbound = await recorder.next_message()
            assert isinstance(inbound.message, Response)
            assert inbound.message.status == 200

        stats = layer.statistics()
        assert stats.udp_datagrams_received == 2
        assert stats.udp_datagrams_sent == 2
        assert stats.udp_bytes_sent == len(response(180)) + len(response(200))
        assert stats.parse_errors == 0


async def test_burst_is_received_whole_and_does_not_starve_others(nursery: trio.Nursery) -> None:
    count = 1000
    with trio.fail_after(10):
        layer, recorder, [local] = await start_layer(nursery, "udp:127.0.0.1:0")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            # Queue the whole burst in the kernel before the layer reads any of it.
            for n in range(count):
                peer.sendto(request(call_id=f"burst-{n}"), (local.host, local.port))

            # A task that runs whenever the scheduler gives it a turn, and notes how many
            # datagrams the layer had read by then.
            seen_by_other_task: list[int] = []

            async def other_task() -> None:
                while True:
                    seen_by_other_task.append(layer.statistics().udp_datagrams_received)
                    await trio.lowlevel.checkpoint()

            nursery.start_soon(other_task)
            call_ids = [(await recorder.next_message()).message.call_id for _ in range(count)]

        assert call_ids == [f"burst-{n}" for n in range(count)]
        assert layer.statistics().udp_datagrams_received == count
        # The receive loop passed through the scheduler between batches: the other task
        # ran while the burst was being drained, not only before and after it.
        assert any(0 < seen < count for seen in seen_by_other_task)


async def test_crlf_keepalive_ping_gets_a_pong(nursery: trio.Nursery) -> None:
    with trio.fail_after(5):
        layer, recorder, [local] = await start_layer(nursery, "udp:127.0.0.1:0")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.setblocking(False)
            peer.sendto(b"\r\n", (local.host, local.port))  # a keep-alive, no ping
            peer.sendto(b"\r\n\r\n", (local.host, local.port))  # RFC 5626 §4.4.1 ping
            peer.sendto(request(), (local.host, local.port))
            inbound = await recorder.next_message()
            assert inbound.message.call_id == "a84b4c76e66710@pc33.example.com"
            # The layer answered the datagrams in order, before handing up the request:
            # the pong is queued already, and it is the only one.
            data, sender = peer.recvfrom(65535)
            assert data == b"\r\n"
            assert sender[1] == local.port
            with pytest.raises(BlockingIOError):
                peer.recvfrom(65535)
        assert recorder.pending_messages() == 0
        assert recorder.pending_errors() == 0
        stats = layer.statistics()
        assert stats.keepalives_received == 2
        assert stats.udp_datagrams_received == 3


async def test_bad_datagram_goes_to_on_parse_error_with_its_source(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(5):
        layer, recorder, [local] = await start_layer(nursery, "udp:127.0.0.1:0")
        with await udp_peer() as peer:
            garbage = b"THIS IS NOT SIP\r\n\r\n"
            await peer.sendto(garbage, (local.host, local.port))
            bad = await recorder.next_error()
            assert isinstance(bad.error, ParseError)
            assert bad.data == garbage
            assert bad.source == peer_address(peer, "udp")
            assert bad.local == local

            # The loop carries on.
            await peer.sendto(request(), (local.host, local.port))
            assert (await recorder.next_message()).source == bad.source
        assert layer.statistics().parse_errors == 1
        assert recorder.pending_messages() == 0


async def test_datagram_over_max_message_size_is_a_413(nursery: trio.Nursery) -> None:
    with trio.fail_after(5):
        limits = TransportLimits(max_message_size=1000)
        layer, recorder, [local] = await start_layer(nursery, "udp:127.0.0.1:0", limits=limits)
        with await udp_peer() as peer:
            big = request(body=b"x" * 2000)
            await peer.sendto(big, (local.host, local.port))
            bad = await recorder.next_error()
            assert bad.error.status == 413
            assert bad.data == big
        assert recorder.pending_messages() == 0
        assert layer.statistics().parse_errors == 1


async def test_ipv6_round_trip(nursery: trio.Nursery) -> None:
    assert ipv6_loopback_works(), "::1 cannot be bound on this machine"
    with trio.fail_after(5):
        layer, recorder, [v4, v6] = await start_layer(nursery, "udp:127.0.0.1:0", "udp:[::1]:0")
        assert v6.host == "::1"
        assert layer.local_address("udp", family_of="::1") == v6
        assert layer.local_address("udp", family_of="192.0.2.1") == v4
        assert layer.local_address("udp") == v4
        with await udp_peer("::1") as peer:
            await peer.sendto(request(), (v6.host, v6.port))
            inbound = await recorder.next_message()
            assert inbound.source == peer_address(peer, "udp")
            assert inbound.source.host == "::1"
            assert inbound.local == v6
            # Sent from the IPv6 listener, chosen by the destination's family.
            await layer.send(response(), inbound.source)
            data, sender = await peer.recvfrom(65535)
            assert data == response()
            assert sender[1] == v6.port


async def test_send_to_a_family_without_listener_is_a_transport_error(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(5):
        layer, _, _ = await start_layer(nursery, "udp:127.0.0.1:0")
        destination = Address("udp", "::1", 5060)
        assert not layer.send_nowait(response(), destination)
        with pytest.raises(TransportError, match=r"udp:\[::1\]:5060: no IPv6 UDP listener"):
            await layer.send(response(), destination)
        assert layer.statistics().send_errors == 1


async def test_send_nowait_declines_what_is_not_udp(nursery: trio.Nursery) -> None:
    with trio.fail_after(5):
        layer, _, _ = await start_layer(nursery, "udp:127.0.0.1:0")
        assert not layer.send_nowait(response(), Address("tcp", "127.0.0.1", 5060))
        assert layer.statistics().udp_datagrams_sent == 0


async def test_send_from_a_chosen_listener(nursery: trio.Nursery) -> None:
    with trio.fail_after(5):
        layer, _, [first, second] = await start_layer(nursery, "udp:127.0.0.1:0", "udp:127.0.0.1:0")
        with await udp_peer() as peer:
            destination = peer_address(peer, "udp")
            await layer.send(b"one", destination)
            assert layer.send_nowait(b"two", destination, local=second)
            await layer.send(b"three", destination, local=second)
            senders = [(await peer.recvfrom(100))[1][1] for _ in range(3)]
        assert senders == [first.port, second.port, second.port]


async def test_send_nowait_alternating_listeners(nursery: trio.Nursery) -> None:
    # send_nowait remembers the last listener it sent from, by identity: switching back
    # and forth, and an equal Address that is another object, must each use the right one.
    with trio.fail_after(5):
        layer, _, [first, second] = await start_layer(nursery, "udp:127.0.0.1:0", "udp:127.0.0.1:0")
        with await udp_peer() as peer:
            destination = peer_address(peer, "udp")
            for local in (second, first, second, Address("udp", first.host, first.port), None):
                assert layer.send_nowait(b"x", destination, local=local)
            senders = [(await peer.recvfrom(100))[1][1] for _ in range(5)]
        assert senders == [second.port, first.port, second.port, first.port, first.port]


async def test_debug_lines_follow_the_level(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    # The receive loop reads the level once per batch: a level set while it waits shows
    # from the next datagram on, for what it receives and what is sent.
    with trio.fail_after(5):
        layer, recorder, [local] = await start_layer(nursery, "udp:127.0.0.1:0")
        with await udp_peer() as peer:
            await peer.sendto(request("OPTIONS"), (local.host, local.port))
            inbound = await recorder.next_message()
            assert not [r for r in caplog.records if r.name == "triosip.transport._udp"]
            caplog.set_level("DEBUG", logger="triosip.transport._udp")
            await peer.sendto(request("OPTIONS"), (local.host, local.port))
            inbound = await recorder.next_message()
            assert layer.send_nowait(response(200), inbound.source)
            await peer.recvfrom(65535)
        lines = [r.getMessage() for r in caplog.records if r.name == "triosip.transport._udp"]
        assert any(
            line.endswith(f"{len(request('OPTIONS'))} bytes") and "<-" in line for line in lines
        )
        assert any(line.startswith("udp -> ") for line in lines)


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_address_in_use_is_a_clear_transport_error(nursery: trio.Nursery) -> None:
    tcp_port = free_port(socket.SOCK_STREAM)
    with trio.fail_after(5), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(TransportError) as info:
            await start_layer(nursery, f"tcp:127.0.0.1:{tcp_port}", f"udp:127.0.0.1:{port}")
        assert str(info.value) == f"cannot listen on udp:127.0.0.1:{port}: address already in use"
    # The TCP listener bound before the failure was closed again.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as again:
        again.bind(("127.0.0.1", tcp_port))


async def test_not_serving_is_a_transport_error() -> None:
    from triosip.transport import TransportLayer

    layer = TransportLayer(
        [Address("udp", "127.0.0.1", 0)],
        on_message=lambda inbound: None,
        on_parse_error=lambda error, data, source, local: None,
    )
    with trio.fail_after(5), pytest.raises(TransportError, match="not serving"):
        await layer.send(b"x", Address("udp", "127.0.0.1", 5060))
    assert layer.listeners == ()
    with pytest.raises(TransportError, match="no udp listener"):
        layer.local_address("udp")


async def test_stopping_closes_the_sockets() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            layer, _, [local] = await start_layer(nursery, "udp:127.0.0.1:0")
            nursery.cancel_scope.cancel()
        assert layer.listeners == ()
        # The port is free again.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
            again.bind((local.host, local.port))


@pytest.mark.parametrize("cache_size", [4096, 2])
async def test_datagrams_keep_their_sources(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, cache_size: int
) -> None:
    # The receive loop keeps the Address of each source it saw (a few, or emptied when
    # more peers than it keeps send): each message must still name its own source.
    monkeypatch.setattr("triosip.transport._udp.PEER_CACHE_SIZE", cache_size)
    with trio.fail_after(5):
        _, recorder, [local] = await start_layer(nursery, "udp:127.0.0.1:0")
        peers = [await udp_peer() for _ in range(3)]
        try:
            sources = [peer_address(peer, "udp") for peer in peers * 2]
            for n, peer in enumerate(peers * 2):
                await peer.sendto(request(call_id=f"c{n}"), (local.host, local.port))
            got = [await recorder.next_message() for _ in range(6)]
        finally:
            for peer in peers:
                peer.close()
        assert [inbound.source for inbound in got] == sources


@pytest.mark.parametrize("reply_to_via", [False, True])
async def test_messages_carry_the_reply_to_via_policy(
    nursery: trio.Nursery, reply_to_via: bool
) -> None:
    # What the responder passes to response_destination: off unless the operator opted in.
    with trio.fail_after(5):
        limits = TransportLimits(reply_to_via=reply_to_via)
        _, recorder, [udp, tcp] = await start_layer(
            nursery, "udp:127.0.0.1:0", "tcp:127.0.0.1:0", limits=limits
        )
        with await udp_peer() as peer:
            await peer.sendto(request(), (udp.host, udp.port))
            assert (await recorder.next_message()).reply_to_via is reply_to_via
        async with await trio.open_tcp_stream(tcp.host, tcp.port) as stream:
            await stream.send_all(request())
            assert (await recorder.next_message()).reply_to_via is reply_to_via
