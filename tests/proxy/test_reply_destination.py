"""Where the proxy sends its responses: back where the request came from (RFC 3261 §18.2.1,
§18.2.2, RFC 3581), never where the client's Via says.

A client writes its own Via, so a ``received``, ``rport`` value or ``maddr`` in it would
let anyone point the proxy's responses at a third party (a reflector, without even
spoofing). The "victim" here is a second `UdpPeer`: it must get nothing.
"""

from __future__ import annotations

import re

import pytest
import trio

from triosip.sip import Request, Response, StreamParser, parse_message
from triosip.testing.proxy import RunningProxy, UdpPeer, open_udp_peer, start_proxy

# How long the victim listens for a response that must not come. The response to the
# caller comes first (same proxy task, same socket), so this only has to cover reordering.
QUIET = 0.2

SECOND_LOOPBACK = "127.0.0.2"


def with_via(request: Request, via: str, *, uri: str | None = None) -> bytes:
    """`request` as bytes, its Via line (and Request-URI) replaced as given."""
    data = re.sub(rb"^Via: [^\r]*", f"Via: {via}".encode(), bytes(request), count=1, flags=re.M)
    if uri is not None:
        data = data.replace(request.uri_raw.encode(), uri.encode(), 1)
    return data


async def assert_nothing_for(peer: UdpPeer) -> None:
    await trio.sleep(QUIET)
    assert peer.received == [], "the proxy sent something to a third party"


async def exchange(
    running: RunningProxy, caller: UdpPeer, callee: UdpPeer, data: bytes
) -> tuple[Request, Response]:
    """Send `data` to the proxy, let the callee answer 200; what the callee got, and
    what the caller got back."""
    await caller.send(data, running.udp)
    relayed, source = await callee.receive_request()
    await callee.respond(relayed, 200, source)
    return relayed, await caller.receive_response()


@pytest.mark.parametrize(
    "via_params",
    [
        # received= naming another host's address (the port comes from sent-by).
        f"received={SECOND_LOOPBACK}",
        # received= and a client-filled rport naming that host and port.
        f"received={SECOND_LOOPBACK};rport={{port}}",
        # maddr= naming it: §18.2.2 would obey it; we do only with --reply-to-via.
        f"maddr={SECOND_LOOPBACK}",
        f"maddr={SECOND_LOOPBACK};rport",
    ],
)
async def test_a_client_s_via_cannot_point_responses_at_a_third_party(via_params: str) -> None:
    # This used to send the 200 to the victim: the Via's received= / rport= / maddr= were
    # obeyed, though the client wrote them.
    with trio.fail_after(3):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            open_udp_peer(SECOND_LOOPBACK) as victim,
            trio.open_nursery() as nursery,
        ):
            running = await start_proxy(nursery, None, params={"downstream": callee.destination})
            # sent-by names the victim's port too, so that only the source can save the
            # caller: the response must go to the source IP, and (with rport) port.
            params = via_params.format(port=victim.port)
            via = f"SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bK-v1;{params}"
            if "rport" not in params:
                # Without rport the sent-by port is used (§18.2.2): the caller's own.
                assert victim.port != caller.port
            request = caller.request("OPTIONS")
            relayed, response = await exchange(running, caller, callee, with_via(request, via))
            assert response.status == 200
            await assert_nothing_for(victim)
            # The Via the proxy passed on carries the real source (§18.2.1): the
            # client's received= is replaced (sent-by is the source here, so none is
            # added), and a requested rport filled with the source port, whatever the
            # client wrote. This used to pass the client's received= and rport= on.
            stamped = relayed.via[1]
            if "received" in params or "rport" in params:
                assert stamped.received == "127.0.0.1"
            else:
                assert stamped.received is None
            if "rport" in params:
                assert stamped.rport == str(caller.port)
            running.stop()


async def test_rport_sends_to_the_source_port() -> None:
    # RFC 3581 §4: with rport, the source port, not the sent-by port (a victim's here).
    with trio.fail_after(3):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            open_udp_peer() as victim,
            trio.open_nursery() as nursery,
        ):
            running = await start_proxy(nursery, None, params={"downstream": callee.destination})
            via = f"SIP/2.0/UDP 127.0.0.1:{victim.port};branch=z9hG4bK-r1;rport"
            relayed, response = await exchange(
                running, caller, callee, with_via(caller.request("OPTIONS"), via)
            )
            assert response.status == 200
            await assert_nothing_for(victim)
            assert relayed.via[1].rport == str(caller.port)
            running.stop()


async def test_without_rport_the_sent_by_port_on_the_source_ip() -> None:
    # RFC 3261 §18.2.2: without rport, the sent-by port, on the source IP whatever the
    # sent-by host (another host's here, and a received= naming that host).
    with trio.fail_after(3):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            open_udp_peer(SECOND_LOOPBACK) as victim,
            trio.open_nursery() as nursery,
        ):
            running = await start_proxy(nursery, None, params={"downstream": callee.destination})
            via = (
                f"SIP/2.0/UDP {SECOND_LOOPBACK}:{caller.port};branch=z9hG4bK-s1;"
                f"received={SECOND_LOOPBACK}"
            )
            relayed, response = await exchange(
                running, caller, callee, with_via(caller.request("OPTIONS"), via)
            )
            assert response.status == 200
            await assert_nothing_for(victim)
            assert relayed.via[1].received == "127.0.0.1"
            running.stop()


@pytest.mark.parametrize(
    "sent_protocol",
    ["SIP/2.0/TLS 127.0.0.1:{port}", "SIP/2.0/SCTP 127.0.0.1:{port}", "SIP/2.0/UDP [::1]:{port}"],
)
async def test_the_answer_goes_back_the_way_the_request_came(sent_protocol: str) -> None:
    # The 400 for a bad Request-URI, to a request over UDP/IPv4 whose Via names TLS, SCTP
    # or an IPv6 sent-by. This used to be lost: "cannot send to tls:...: transport tls is
    # not supported" (or no IPv6 listener), and the caller got nothing.
    with trio.fail_after(3):
        async with open_udp_peer() as caller, trio.open_nursery() as nursery:
            running = await start_proxy(nursery, None)
            via = f"{sent_protocol.format(port=caller.port)};branch=z9hG4bK-t1;received=::1"
            await caller.send(with_via(caller.request("OPTIONS"), via, uri="bob"), running.udp)
            response = await caller.receive_response()
            assert response.status == 400
            running.stop()


async def test_over_tcp_the_answer_comes_back_on_the_request_s_connection() -> None:
    # RFC 3261 §18.2.2: whatever the Via says (here: another port, where a "victim"
    # listens on TCP), the response goes back on the connection the request came on.
    with trio.fail_after(3):
        async with (
            open_udp_peer() as stand_in,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            running = await start_proxy(nursery, None, params={"downstream": callee.destination})
            [victim] = await trio.open_tcp_listeners(0, host="127.0.0.1")
            victim_port = victim.socket.getsockname()[1]
            via = f"SIP/2.0/TCP 127.0.0.1:{victim_port};branch=z9hG4bK-c1;received=127.0.0.1"
            async with (
                victim,
                await trio.open_tcp_stream(running.tcp.host, running.tcp.port) as stream,
            ):
                await stream.send_all(with_via(stand_in.request("OPTIONS"), via))
                relayed, source = await callee.receive_request()
                await callee.respond(relayed, 200, source)
                parser = StreamParser()
                response = None
                while response is None:
                    parser.feed(await stream.receive_some(65536))
                    response = parser.next_message()
                assert isinstance(response, Response)
                assert response.status == 200
                with trio.move_on_after(QUIET) as quiet:
                    await victim.accept()
                assert quiet.cancelled_caught, "the proxy connected to the Via's port"
            running.stop()


async def test_with_reply_to_via_maddr_is_obeyed() -> None:
    # The operator's opt-in (triosip run --reply-to-via): the Via as §18.2.2 reads it.
    with trio.fail_after(3):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            open_udp_peer(SECOND_LOOPBACK) as elsewhere,
            trio.open_nursery() as nursery,
        ):
            running = await start_proxy(
                nursery,
                None,
                params={"downstream": callee.destination},
                reply_to_via=True,
            )
            via = (
                f"SIP/2.0/UDP 127.0.0.1:{elsewhere.port};branch=z9hG4bK-m1;maddr={SECOND_LOOPBACK}"
            )
            await caller.send(with_via(caller.request("OPTIONS"), via), running.udp)
            relayed, source = await callee.receive_request()
            await callee.respond(relayed, 200, source)
            with trio.fail_after(1):
                response = await elsewhere.receive_response()
            assert response.status == 200
            running.stop()


def test_with_via_replaces_the_via_only() -> None:
    request = parse_message(
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h:1;branch=z9hG4bK-1\r\nMax-Forwards: 70"
        b"\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    assert isinstance(request, Request)
    data = with_via(request, "SIP/2.0/TLS x:2;branch=z9hG4bK-2", uri="bob")
    rewritten = parse_message(data)
    assert isinstance(rewritten, Request)
    assert str(rewritten.top_via) == "SIP/2.0/TLS x:2;branch=z9hG4bK-2"
    assert rewritten.uri_raw == "bob"
    assert rewritten.header("call-id") == "c"
