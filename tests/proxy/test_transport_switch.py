"""RFC 3261 §18.1.1: a request too large for UDP leaves over TCP; a small one stays on UDP."""

import pytest
import trio

from triosip.script.api import RequestContext, Routes
from triosip.sip import Request, Response, StreamParser, parse_message
from triosip.testing.proxy import start_proxy
from triosip.transport import Address

LOOPBACK = "127.0.0.1"


def invite(port: int, filler: int) -> bytes:
    body = f"v=0\r\na=x-filler:{'x' * filler}\r\n"
    return (
        "INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-big-{filler};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
        "To: <sip:bob@127.0.0.1>\r\n"
        f"Call-ID: big-{filler}@127.0.0.1\r\n"
        "CSeq: 1 INVITE\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def relay_to(port: int) -> Routes:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        await req.relay(f"udp:127.0.0.1:{port}")

    return routes


async def receive_on_tcp(listener: trio.SocketListener) -> Request:
    stream = await listener.accept()
    parser = StreamParser()
    async with stream:
        while True:
            parser.feed(await stream.receive_some(65536))
            message = parser.next_message()
            if message is not None:
                assert isinstance(message, Request)
                return message


async def start(nursery: trio.Nursery, downstream_port: int) -> Address:
    running = await start_proxy(nursery, relay_to(downstream_port))
    return running.udp


@pytest.mark.parametrize(("filler", "transport"), [(100, "udp"), (1500, "tcp")])
async def test_the_transport_follows_the_request_size(filler: int, transport: str) -> None:
    with trio.fail_after(5):
        # The downstream listens on the same port over UDP and TCP, as RFC 3263 expects.
        tcp_listeners = await trio.open_tcp_listeners(0, host=LOOPBACK)
        port = tcp_listeners[0].socket.getsockname()[1]
        udp = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
        await udp.bind((LOOPBACK, port))
        caller = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
        await caller.bind((LOOPBACK, 0))
        async with trio.open_nursery() as nursery:
            proxy = await start(nursery, port)
            await caller.sendto(invite(caller.getsockname()[1], filler), (proxy.host, proxy.port))
            received: Request | Response
            if transport == "tcp":
                received = await receive_on_tcp(tcp_listeners[0])
            else:
                data, _ = await udp.recvfrom(65536)
                received = parse_message(data)
                assert isinstance(received, Request)
            assert received.top_via.transport == transport.upper()
            assert received.header("content-length") == str(len(received.body))
            assert b"x" * filler in received.body
            nursery.cancel_scope.cancel()
        udp.close()
        caller.close()
        for listener in tcp_listeners:
            await listener.aclose()
