"""Real calls through an in-process proxy: sipp as caller and callee, over UDP and TCP.

Each test runs a `Proxy` in its own nursery (`triosip.testing.proxy.start_proxy`, free
ports on 127.0.0.1) and drives it with sipp processes (`triosip.testing.sipp`), or with
raw UDP sockets where a test needs to see each message (the 408's timing, malformed
bytes, the proxy's own answers). These run on the real clock: sipp can't follow a mock
one. Every test checks that no sipp it started is left running.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Literal

import pytest
import trio

from triosip.sip import Request, Response, build_response, parse_message
from triosip.testing.proxy import UdpPeer, open_udp_peer, start_proxy
from triosip.testing.sipp import (
    UAC_CANCEL,
    UAC_RRS,
    UAS_BUSY,
    UAS_RECORD_ROUTE,
    UAS_RINGING,
    UAS_SILENT,
    open_uas,
    run_uac,
)

ROUTES = Path(__file__).parent / "routes"


# No sipp (nor anything else) may be left running. (The harness's own tests check that
# sipp's working directories go too; other test runs may share the temporary folder, so
# that is not checked here.)
pytestmark = pytest.mark.usefixtures("nothing_left_behind")


# -- calls that succeed -------------------------------------------------------------------


async def test_calls_over_udp() -> None:
    # sipp's built-in uac and uas, the default routes: the INVITE goes to its Request-URI
    # (the uas); the ACK and BYE, which this uac sends with no Route, too.
    # On a loaded machine the proxy may send an INVITE again (Timer A) before it has read
    # the uas's 180: right by RFC 3261 §17.1.1.2, but sipp's uas, past its INVITE, takes
    # it as unexpected and would abort the call; it is told to ignore it instead. Every
    # message of each call must still come for the call to count.
    calls = 300
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            running = await start_proxy(nursery, None)
            async with open_uas(stop_grace=0, abort_unexpected=False) as uas:
                result = await run_uac(
                    uas.address,
                    remote_sending_address=running.udp.host_port,
                    rate=200,
                    max_calls=calls,
                    global_timeout=20,
                )
            stats = running.proxy.statistics()
            transactions = running.proxy.transactions.statistics()
            running.stop()

    assert (result.calls_successful, result.calls_failed) == (calls, 0), result.error_log
    assert uas.result.calls_created == calls
    assert uas.result.calls_failed == 0
    # One transaction per INVITE and per BYE; the caller's retransmissions were absorbed.
    assert (transactions.ist_total, transactions.nist_total) == (calls, calls)
    assert stats.requests_forwarded.get("INVITE") == calls
    assert stats.requests_forwarded.get("ACK") == calls
    assert stats.requests_forwarded.get("BYE") == calls
    # Nothing answered by the proxy itself but the 100 Trying: every reply came from the uas.
    assert stats.replies_generated == {"1xx": calls}
    assert stats.parse_errors == {}


@pytest.mark.parametrize("caller", ["tcp", "udp"])
async def test_calls_to_a_tcp_callee(caller: Literal["udp", "tcp"]) -> None:
    # The callee speaks TCP only; the caller TCP (same transport through) or UDP (the
    # proxy converts, and record-routes twice: RFC 3261 §16.6 step 4). Both sides honour
    # Record-Route, so the ACK and BYE come back through the proxy with a Route set.
    calls = 150
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            async with open_uas(scenario=UAS_RECORD_ROUTE, transport="tcp", stop_grace=0) as uas:
                running = await start_proxy(
                    nursery, None, params={"downstream": f"tcp:{uas.address}"}
                )
                entry = running.tcp if caller == "tcp" else running.udp
                result = await run_uac(
                    uas.address,
                    scenario=UAC_RRS,
                    transport=caller,
                    remote_sending_address=entry.host_port,
                    rate=200,
                    max_calls=calls,
                    global_timeout=20,
                )
            stats = running.proxy.statistics()
            transport = running.proxy.transport.statistics()
            running.stop()

    assert (result.calls_successful, result.calls_failed) == (calls, 0), result.error_log
    assert uas.result.calls_created == calls
    assert uas.result.calls_failed == 0
    assert stats.requests_forwarded.get("BYE") == calls
    assert stats.replies_generated == {"1xx": calls}  # the 100 Trying
    # One connection to the callee, reused for every call (and one from a TCP caller).
    assert transport.tcp_connections_connected == 1
    assert transport.tcp_connections_accepted == (1 if caller == "tcp" else 0)


async def test_cancel_of_a_ringing_call() -> None:
    # INVITE, 180, CANCEL: the caller gets 200 for its CANCEL and 487 for its INVITE; the
    # callee gets the proxy's own CANCEL (RFC 3261 §16.10), and the proxy's ACK for its
    # 487 (§17.1.1.3). uas_ringing succeeds only once the CANCEL came and its 487
    # was ACKed; uac_cancel only once it got the 200 and the 487.
    calls = 20
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            running = await start_proxy(nursery, None)
            async with open_uas(scenario=UAS_RINGING) as uas:
                result = await run_uac(
                    uas.address,
                    scenario=UAC_CANCEL,
                    remote_sending_address=running.udp.host_port,
                    rate=100,
                    max_calls=calls,
                    global_timeout=20,
                )
            stats = running.proxy.statistics()
            transactions = running.proxy.transactions.statistics()
            running.stop()

    assert (result.calls_successful, result.calls_failed) == (calls, 0), result.error_log
    assert (uas.result.calls_successful, uas.result.calls_failed) == (calls, 0), (
        uas.result.error_log
    )
    assert (transactions.ist_total, transactions.nist_total) == (calls, calls)  # the CANCELs
    # The 100 and the 200 to each CANCEL are the proxy's own; the 487 is the callee's.
    assert stats.replies_generated == {"1xx": calls, "2xx": calls}
    assert stats.replies_forwarded.get("4xx") == calls


async def test_busy_callee_fails_over_to_the_second(caplog: pytest.LogCaptureFixture) -> None:
    # The failure route sees the 486 and relays to a second callee (serial forking); the
    # caller never sees the 486.
    caplog.set_level(logging.INFO, logger="triosip.script")
    calls = 20
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            async with (
                open_uas(scenario=UAS_BUSY) as busy,
                open_uas(scenario=UAS_RECORD_ROUTE, stop_grace=0) as second,
            ):
                running = await start_proxy(
                    nursery,
                    ROUTES / "serial_forking.py",
                    params={"first": f"udp:{busy.address}", "second": f"udp:{second.address}"},
                )
                result = await run_uac(
                    busy.address,
                    scenario=UAC_RRS,
                    remote_sending_address=running.udp.host_port,
                    rate=100,
                    max_calls=calls,
                    global_timeout=20,
                )
            stats = running.proxy.statistics()
            running.stop()

    assert (result.calls_successful, result.calls_failed) == (calls, 0), result.error_log
    # Each 486 was ACKed by the proxy, hop by hop.
    assert (busy.result.calls_successful, busy.result.calls_failed) == (calls, 0)
    assert second.result.calls_created == calls
    assert second.result.calls_failed == 0, second.result.error_log
    failures = [r.getMessage() for r in caplog.records if "failure route" in r.getMessage()]
    assert len(failures) == calls
    assert all(f"failure route: 486 from udp:{busy.address}" in line for line in failures)
    assert stats.requests_forwarded.get("INVITE") == 2 * calls


# -- calls that fail ----------------------------------------------------------------------


async def test_unanswered_invite_gets_408_after_fr_timeout() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            async with (
                open_uas(scenario=UAS_SILENT, stop_grace=0) as uas,
                open_udp_peer() as caller,
            ):
                running = await start_proxy(nursery, None, fr_timeout=1.0)
                invite = caller.request("INVITE", f"sip:bob@{uas.address}")
                sent_at = trio.current_time()
                await caller.send(invite, running.udp)
                response = await caller.receive_response()
                answered_after = trio.current_time() - sent_at
                await caller.send(caller.ack(invite, response), running.udp)
            running.stop()

    assert response.status == 408
    assert response.call_id == invite.call_id
    assert response.to.tag  # the proxy's own answer (RFC 3261 §16.7 step 6 / §8.2.6.2)
    assert 0.9 < answered_after < 2.5
    assert [
        (r.message.status, r.source) for r in caller.received if isinstance(r.message, Response)
    ] == [(100, running.udp), (408, running.udp)]
    assert len(caller.received) == 2
    assert uas.result.calls_created == 1


# -- what the proxy answers itself ----------------------------------------------------------


def _malformed(peer: UdpPeer, call_id: str, edit: tuple[bytes, bytes]) -> bytes:
    data = bytes(peer.request("OPTIONS", "sip:bob@127.0.0.1:9", call_id=call_id))
    old, new = edit
    assert data.count(old) == 1, old
    return data.replace(old, new)


ANSWERED = {
    # (what is changed in a valid OPTIONS) -> (status, words of the reason)
    "cseq-method": ((b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"), 400, "CSeq method"),
    "max-forwards": ((b"Max-Forwards: 70", b"Max-Forwards: many"), 400, "Max-Forwards"),
    "no-colon": ((b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nNoColon\r\n"), 400, "colon"),
    "length": ((b"Content-Length: 0", b"Content-Length: 50"), 400, "Content-Length"),
    "version": ((b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia"), 505, "version"),
    "request-uri": ((b"sip:bob@127.0.0.1:9 SIP", b"bob SIP"), 400, "URI"),
}
UNANSWERABLE = {
    # RFC 3261 §8.2 needs these to answer at all: the answer could not be matched or routed.
    "no-call-id": (b"Call-ID: ", b"X-Call-ID: "),
    "bad-cseq": (b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS"),
}


async def test_malformed_requests_get_400_and_calls_go_on() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            async with open_udp_peer() as caller:
                running = await start_proxy(nursery, None)
                for name, edit in UNANSWERABLE.items():
                    await caller.send(_malformed(caller, f"bad-{name}", edit), running.udp)
                await caller.send(b"\x00\xffnot SIP at all\r\n\r\n", running.udp)
                for name, (edit, _, _) in ANSWERED.items():
                    await caller.send(_malformed(caller, f"bad-{name}", edit), running.udp)
                answers: dict[str, Response] = {}
                while len(answers) < len(ANSWERED):
                    response = await caller.receive_response()
                    answers[response.call_id.removeprefix("bad-")] = response
                # Nothing more comes for the unanswerable ones.
                with trio.move_on_after(0.3):
                    extra = await caller.receive()
                    pytest.fail(f"unexpected answer {extra}")
            # The proxy still relays calls.
            async with open_uas(stop_grace=0) as uas:
                result = await run_uac(
                    uas.address,
                    remote_sending_address=running.udp.host_port,
                    rate=100,
                    max_calls=5,
                    global_timeout=10,
                )
            stats = running.proxy.statistics()
            running.stop()

    for name, (_, status, words) in ANSWERED.items():
        response = answers[name]
        assert response.status == status, (name, response)
        assert words in response.reason, (name, response.reason)
        assert response.to.tag, name
    # Every one that failed to parse or the acceptance check was counted, the unanswered
    # ones (and the garbage) too; the bad Request-URI is among them (it used to be read
    # lazily, when the route used it: check_message reads it on acceptance now).
    assert sum(stats.parse_errors.values()) == len(ANSWERED) + len(UNANSWERABLE) + 1
    assert result.calls_successful == 5, result.error_log


async def test_proxy_s_own_answers() -> None:
    # RFC 3261 §16.3: Max-Forwards 0 -> 483 (step 3), a loop -> 482 (step 4), an
    # unsupported Proxy-Require -> 420 with Unsupported (step 5).
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            async with open_udp_peer() as caller:
                running = await start_proxy(nursery, None)
                own = running.udp
                no_hops = caller.request("OPTIONS", "sip:bob@127.0.0.1:9", max_forwards=0)
                await caller.send(no_hops, own)
                r483 = await caller.receive_response()
                extension = caller.request(
                    "INVITE", "sip:bob@127.0.0.1:9", headers=[("Proxy-Require", "foo, bar")]
                )
                await caller.send(extension, own)
                r420 = await caller.receive_response()
                await caller.send(caller.ack(extension, r420), own)
            running.stop()

    assert (r483.status, r483.reason) == (483, "Too Many Hops")
    assert (r420.status, r420.reason) == (420, "Bad Extension")
    assert r420.header_values("unsupported") == ["foo", "bar"]


async def test_loop_gets_482() -> None:
    # The downstream bounces what it gets back to the proxy: the request comes back with
    # our Via, unchanged, and is refused as a loop (§16.3 step 4) rather than relayed 70
    # times until 483. (The downstream was the proxy itself; relay() now refuses that
    # before sending, tests/script/test_api.py.)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            async with open_udp_peer() as caller, open_udp_peer() as mirror:
                running = await start_proxy(
                    nursery, None, params={"downstream": mirror.destination}
                )

                async def bounce() -> None:
                    while True:
                        await mirror.send((await mirror.receive()).message, running.udp)

                nursery.start_soon(bounce)
                invite = caller.request("INVITE", "sip:bob@example.com")
                await caller.send(invite, running.udp)
                response = await caller.receive_response()
                await caller.send(caller.ack(invite, response), running.udp)
            stats = running.proxy.statistics()
            transactions = running.proxy.transactions.statistics()
            nursery.cancel_scope.cancel()

    assert (response.status, response.reason) == (482, "Loop Detected")
    # Forwarded once (to the mirror), refused the second time round.
    assert stats.requests_forwarded.get("INVITE") == 1
    assert transactions.ist_total == 2


async def test_large_request_goes_over_tcp() -> None:
    # RFC 3261 §18.1.1: a request larger than 1300 bytes (MTU unknown) must go over a
    # congestion-controlled transport: the proxy sends it by TCP to the same host and
    # port, and rewrites its Via accordingly.
    body = b"x" * 1500
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            async with open_udp_peer() as caller:
                listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                with listener, udp:
                    await listener.bind(("127.0.0.1", 0))
                    listener.listen()
                    port = listener.getsockname()[1]
                    await udp.bind(("127.0.0.1", port))
                    running = await start_proxy(
                        nursery, None, params={"downstream": f"udp:127.0.0.1:{port}"}
                    )
                    message = caller.request(
                        "MESSAGE",
                        "sip:bob@example.com",
                        headers=[("Content-Type", "text/plain")],
                        body=body,
                    )
                    await caller.send(message, running.udp)
                    connection, _ = await listener.accept()
                    with connection:
                        data = b""
                        while not data.endswith(body):
                            chunk = await connection.recv(65536)
                            assert chunk, "connection closed before the whole request"
                            data += chunk
                        relayed = parse_message(data)
                        assert isinstance(relayed, Request)
                        answer = build_response(relayed, 200, to_tag="callee")
                        await connection.send(bytes(answer))
                        response = await caller.receive_response()
            running.stop()

    assert relayed.top_via.transport == "TCP"
    assert relayed.body == body
    assert relayed.content_length == len(body)
    assert response.status == 200
