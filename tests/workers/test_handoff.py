"""Handing messages over between workers (``triosip.transport``'s ``_handoff.py``): what
one receive batch hands to an owner goes in one datagram, and the owner handles each
message as if it had read it from the shared listener."""

from __future__ import annotations

import socket
from contextlib import ExitStack

import trio

from tests.support.transport import Recorder, request
from triosip.transport import Address, TransportLayer, WorkerSockets, owner_of
from triosip.transport._handoff import HANDOFF_PACKET_SIZE, HandOff, split_handoffs
from triosip.transport._statistics import Counters

LOCAL = Address("udp", "127.0.0.1", 5060)


def pairs(stack: ExitStack, count: int) -> list[tuple[socket.socket, socket.socket]]:
    made = []
    for _ in range(count):
        outbox, inbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        stack.callback(outbox.close)
        stack.callback(inbox.close)
        inbox.setblocking(False)
        made.append((outbox, inbox))
    return made


def owned_by(owner: int, how_many: int) -> list[bytes]:
    """`how_many` requests that worker `owner` of two owns."""
    found: list[bytes] = []
    n = 0
    while len(found) < how_many:
        data = request("INVITE", call_id=f"call-{n}@test")
        if owner_of(data, 2) == owner:
            found.append(data)
        n += 1
    return found


def test_a_batch_goes_to_its_owner_in_one_datagram() -> None:
    with ExitStack() as stack:
        (out0, _), (out1, inbox1) = pairs(stack, 2)
        counters = Counters()
        hand_off = HandOff(
            WorkerSockets(index=0, inbox=inbox1, outboxes=(out0, out1)), counters, {}
        )
        mine = owned_by(0, 2)
        theirs = owned_by(1, 3)
        assert not hand_off(mine[0], ("192.0.2.1", 5070), LOCAL)
        for n, data in enumerate(theirs):
            assert hand_off(data, ("192.0.2.1", 5070 + n), LOCAL)
        assert not hand_off(mine[1], ("192.0.2.1", 5070), LOCAL)
        hand_off.flush()

        records = split_handoffs(inbox1.recv(HANDOFF_PACKET_SIZE))
        assert records == [
            (f"192.0.2.1 {5070 + n} 127.0.0.1 5060\n".encode(), data)
            for n, data in enumerate(theirs)
        ]
        assert counters.udp_handed_off == 3
        hand_off.flush()  # nothing more to send
        try:
            inbox1.recv(HANDOFF_PACKET_SIZE)
        except BlockingIOError:
            pass
        else:
            raise AssertionError("a second datagram")


def test_a_batch_stops_short_of_the_largest_datagram() -> None:
    with ExitStack() as stack:
        (out0, _), (out1, inbox1) = pairs(stack, 2)
        out1.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        counters = Counters()
        hand_off = HandOff(
            WorkerSockets(index=0, inbox=inbox1, outboxes=(out0, out1)), counters, {}
        )
        big = owned_by(1, 3)
        big = [data.replace(b"Content-Length: 0", b"X: " + b"x" * 30000) for data in big]
        for data in big:
            assert hand_off(data, ("192.0.2.1", 5070), LOCAL)
        hand_off.flush()
        got = []
        while True:
            try:
                packet = inbox1.recv(HANDOFF_PACKET_SIZE)
            except BlockingIOError:
                break
            assert len(packet) <= HANDOFF_PACKET_SIZE
            records = split_handoffs(packet)
            assert records is not None
            got += [data for _, data in records]
        assert got == big
        assert counters.udp_handed_off == 3


def test_what_is_not_a_sequence_of_records_is_refused() -> None:
    assert split_handoffs(b"") == []
    assert split_handoffs(b"\x00\x00") is None  # a cut length
    assert split_handoffs(b"\x00\x00\x00\x09no newline") is None
    assert split_handoffs(b"\x00\x00\x00\xffa b c d\nshort") is None  # a cut record


async def test_two_workers_each_handle_what_they_own() -> None:
    # Two workers in one process, sharing a listener as `--workers 2` does: whichever
    # socket the kernel picks, each message reaches its owner, named as coming from its
    # peer to the shared listener.
    with ExitStack() as stack, trio.fail_after(5):
        (out0, inbox0), (out1, inbox1) = pairs(stack, 2)
        recorders = [Recorder(), Recorder()]
        layers: list[TransportLayer] = []
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stack.callback(peer.close)
        peer.bind(("127.0.0.1", 0))
        source = Address("udp", "127.0.0.1", peer.getsockname()[1])
        async with trio.open_nursery() as nursery:
            listen = Address("udp", "127.0.0.1", 0)
            for index, inbox in enumerate((inbox0, inbox1)):
                layer = TransportLayer(
                    [listen],
                    on_message=recorders[index].on_message,
                    on_parse_error=recorders[index].on_parse_error,
                    worker=WorkerSockets(index=index, inbox=inbox, outboxes=(out0, out1)),
                )
                (listen,) = await nursery.start(layer.serve)
                layers.append(layer)
            sent = [request("INVITE", call_id=f"call-{n}@test") for n in range(20)]
            for data in sent:  # a burst, as one receive batch reads it
                peer.sendto(data, (listen.host, listen.port))
            for index, recorder in enumerate(recorders):
                mine = [data for data in sent if owner_of(data, 2) == index]
                got = [await recorder.next_message() for _ in mine]
                assert [inbound.message.call_id for inbound in got] == [
                    f"call-{sent.index(data)}@test" for data in mine
                ]
                assert {(inbound.source, inbound.local) for inbound in got} == {(source, listen)}
            nursery.cancel_scope.cancel()
        handed = [layer.statistics() for layer in layers]
        assert sum(s.udp_handed_off for s in handed) == sum(s.udp_handed_in for s in handed) > 0


def test_a_full_queue_drops_the_batch_and_counts_each_message() -> None:
    # The owner is overloaded (or dead and not replaced yet): its queue is full. Drop, as
    # a full UDP receive buffer would, and count every message of the batch.
    with ExitStack() as stack:
        (out0, _), (out1, inbox1) = pairs(stack, 2)
        out1.setblocking(False)
        while True:  # fill the owner's queue
            try:
                out1.send(b"x" * 1000)
            except BlockingIOError:
                break
        counters = Counters()
        hand_off = HandOff(
            WorkerSockets(index=0, inbox=inbox1, outboxes=(out0, out1)), counters, {}
        )
        for data in owned_by(1, 3):
            assert hand_off(data, ("192.0.2.1", 5070), LOCAL)
        hand_off.flush()
        assert (counters.udp_handoff_dropped, counters.udp_handed_off) == (3, 0)


async def test_a_batch_s_hand_offs_leave_before_its_own_messages_are_handled() -> None:
    # The owner works on its messages (on another core) while this worker handles its
    # own: each message handled here finds the other worker's already in its inbox.
    with ExitStack() as stack, trio.fail_after(5):
        (out0, inbox0), (out1, inbox1) = pairs(stack, 2)
        queued_when_handled: list[bool] = []
        both_handled = trio.Event()

        def on_message(_: object) -> None:
            try:
                inbox1.recv(HANDOFF_PACKET_SIZE, socket.MSG_PEEK)
            except BlockingIOError:
                queued_when_handled.append(False)
            else:
                queued_when_handled.append(True)
            if len(queued_when_handled) == 2:
                both_handled.set()

        layer = TransportLayer(
            [Address("udp", "127.0.0.1", 0)],
            on_message=on_message,
            on_parse_error=print,
            worker=WorkerSockets(index=0, inbox=inbox0, outboxes=(out0, out1)),
        )
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stack.callback(peer.close)
        async with trio.open_nursery() as nursery:
            (listen,) = await nursery.start(layer.serve)
            mine, theirs = owned_by(0, 2), owned_by(1, 1)
            for data in (mine[0], theirs[0], mine[1]):  # one burst: one receive batch
                peer.sendto(data, (listen.host, listen.port))
            await both_handled.wait()
            nursery.cancel_scope.cancel()
        assert queued_when_handled == [True, True]
        assert layer.statistics().udp_handed_off == 1
