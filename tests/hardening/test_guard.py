"""The proxy survives every message: whatever one message does, the serve loop goes on.

Each test sends what used to end (or wedge) the proxy, then checks that the proxy still
relays a call: a probe OPTIONS from a caller reaches the callee and its 200 comes back.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
import trio

from triosip.testing.proxy import UdpPeer, open_udp_peer, start_proxy

if TYPE_CHECKING:
    from triosip.testing.proxy import RunningProxy

LIMIT = 5


async def assert_still_relays(running: RunningProxy, caller: UdpPeer, callee: UdpPeer) -> None:
    """A probe OPTIONS goes through the proxy to `callee` and its 200 comes back."""
    probe = caller.request("OPTIONS", f"sip:probe@{callee.address.host_port}")
    await caller.send(probe, running.udp)
    await callee.answer(200)
    response = await caller.receive_response()
    assert response.status == 200
    assert response.call_id == probe.call_id


STRAY_2XX_BAD_LOWER_VIA = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP {proxy};branch=z9hG4bK-1\r\n"
    "Via: SIP/2.0/UDP ;;;\r\n"
    "From: <sip:a@example.com>;tag=1\r\n"
    "To: <sip:b@example.com>;tag=2\r\n"
    "Call-ID: stray-1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Content-Length: 0\r\n\r\n"
)


async def test_a_stray_2xx_with_a_bad_lower_via_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # This used to end the proxy (exit 1): the stray-2xx path read every Via of a response
    # that matched no transaction, and the ParseError escaped into the proxy's nursery.
    with trio.fail_after(LIMIT):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            running = await start_proxy(nursery, None, params={"downstream": callee.destination})
            stray = STRAY_2XX_BAD_LOWER_VIA.format(proxy=running.udp.host_port).encode()
            for _ in range(3):  # a downstream retransmits its 2xx
                await caller.send(stray, running.udp)
            await assert_still_relays(running, caller, callee)
            running.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_flood_of_bad_messages_logs_a_few_short_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # This used to log one line per bad message, quoting up to 60 KB of it.
    caplog.set_level(logging.INFO, logger="triosip")
    garbage = b"INVITE sip:x@y SIP/2.0\r\nVia: \xff" + b"\x00" * 30_000 + b"\r\n\r\n"
    with trio.fail_after(LIMIT):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            running = await start_proxy(nursery, None, params={"downstream": callee.destination})
            for _ in range(200):
                await caller.send(garbage, running.udp)
            await assert_still_relays(running, caller, callee)
            running.stop()
    lines = [r.getMessage() for r in caplog.records if "bad message" in r.getMessage()]
    assert 1 <= len(lines) <= 5
    assert max(len(line) for line in lines) < 400
    assert running.proxy.statistics().parse_errors  # every one of them counted
    assert sum(running.proxy.statistics().parse_errors.values()) == 200


async def test_during_the_grace_in_dialog_requests_are_still_relayed() -> None:
    # This used to answer the BYE of an established call with 503 once SIGTERM came: the
    # caller's hang-up never reached the callee.
    with trio.fail_after(LIMIT):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            running = await start_proxy(nursery, None, params={"downstream": callee.destination})
            invite = caller.request("INVITE", f"sip:bob@{callee.address.host_port}")
            await caller.send(invite, running.udp)
            await callee.answer(200)
            ok = await caller.receive_response()
            assert ok.status == 200

            running.proxy.stop_accepting()  # what SIGTERM does first
            bye = caller.request(
                "BYE",
                f"sip:bob@{callee.address.host_port}",
                call_id=invite.call_id,
                cseq=2,
                to_tag=ok.to.tag,
            )
            await caller.send(bye, running.udp)
            relayed = await callee.answer(200)
            assert (relayed.method, relayed.call_id) == ("BYE", invite.call_id)
            assert (await caller.receive_response(method="BYE")).status == 200

            new_call = caller.request("INVITE", f"sip:carol@{callee.address.host_port}")
            await caller.send(new_call, running.udp)
            refused = await caller.receive_response(method="INVITE")
            assert (refused.status, refused.call_id) == (503, new_call.call_id)
            assert refused.header("retry-after") is not None
            running.stop()


async def test_when_the_grace_ends_a_ringing_call_gets_503_and_its_branch_a_cancel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # This used to leave the caller with nothing after its 180: the transaction was
    # cancelled with the proxy, and the callee kept ringing.
    async with (
        open_udp_peer() as caller,
        open_udp_peer() as callee,
        trio.open_nursery() as nursery,
    ):
        running = await start_proxy(nursery, None, params={"downstream": callee.destination})
        invite = caller.request("INVITE", f"sip:bob@{callee.address.host_port}")
        await caller.send(invite, running.udp)
        await callee.answer(180)
        assert (await caller.receive_response(status=180)).status == 180

        started = trio.current_time()
        await running.proxy.shut_down(grace=10)
        assert trio.current_time() - started == pytest.approx(10, abs=0.01)
        final = await caller.receive_response()
        assert (final.status, final.call_id) == (503, invite.call_id)
        assert final.header("retry-after") is not None
        cancel, _ = await callee.receive_request("CANCEL")
        assert cancel.call_id == invite.call_id
        running.stop()


async def test_an_ack_without_a_to_tag_is_dropped_by_the_default_routes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # This used to log a traceback (found by the wire fuzz): an ACK that matches no
    # transaction runs the request route statelessly, and the default routes armed a
    # failure route on it, which a stateless request refuses.
    with trio.fail_after(LIMIT):
        async with (
            open_udp_peer() as caller,
            open_udp_peer() as callee,
            trio.open_nursery() as nursery,
        ):
            running = await start_proxy(nursery, None, params={"downstream": callee.destination})
            ack = caller.request("ACK", f"sip:bob@{callee.address.host_port}")
            await caller.send(ack, running.udp)
            await assert_still_relays(running, caller, callee)
            running.stop()
    assert [m.method for m in callee.messages if hasattr(m, "method")] == ["OPTIONS"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
