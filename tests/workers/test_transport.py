"""A worker's transport (`TransportLayer` with `WorkerSockets`): the listener shared, a
private port beside it that the Via names, and what ``--advertise`` changes."""

from __future__ import annotations

import socket
from contextlib import ExitStack

import trio

from triosip.transport import Address, TransportLayer, WorkerSockets

LISTEN = Address("udp", "127.0.0.1", 0)


def layer(
    stack: ExitStack, advertise: dict[Address, tuple[str, int | None]] | None = None
) -> TransportLayer:
    outbox, inbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    stack.callback(outbox.close)
    stack.callback(inbox.close)
    worker = WorkerSockets(index=0, inbox=inbox, outboxes=(outbox,))
    return TransportLayer(
        [LISTEN], on_message=print, on_parse_error=print, worker=worker, advertise=advertise
    )


async def test_a_worker_s_via_names_its_own_port_and_is_myself() -> None:
    with ExitStack() as stack, trio.fail_after(5):
        transport = layer(stack)
        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(transport.serve)
            named = transport.advertised(listener, "127.0.0.1")
            own = transport.sent_by(listener, named)
            nursery.cancel_scope.cancel()

    assert named == listener  # Record-Route: the shared address
    assert (own.host, own.transport) == (listener.host, "udp")
    assert own.port != listener.port


async def test_the_private_port_receives_and_is_ours() -> None:
    with ExitStack() as stack, trio.fail_after(5):
        transport = layer(stack)
        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(transport.serve)
            own = transport.sent_by(listener, listener)
            myself = transport.names.myself
            nursery.cancel_scope.cancel()

    assert ("127.0.0.1", own.port) in myself
    assert ("127.0.0.1", listener.port) in myself


async def test_an_advertised_listener_keeps_its_name_in_the_via() -> None:
    # Behind a NAT, the private port is not reachable as the advertised host: the Via
    # names the advertised address, and responses reach a worker, which hands them over.
    with ExitStack() as stack, trio.fail_after(5):
        transport = layer(stack, {LISTEN: ("sip.example.net", 5060)})
        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(transport.serve)
            named = transport.advertised(listener, "127.0.0.1")
            via = transport.sent_by(listener, named)
            nursery.cancel_scope.cancel()

    assert via == named == Address("udp", "sip.example.net", 5060)


async def test_one_process_names_what_it_advertises() -> None:
    transport = TransportLayer([LISTEN], on_message=print, on_parse_error=print)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(transport.serve)
            assert transport.sent_by(listener, listener) is listener
            nursery.cancel_scope.cancel()
