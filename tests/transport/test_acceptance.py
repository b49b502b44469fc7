"""What the transport accepts has passed check_message: a bad field takes the parse-error path.

A request whose second Via is bad used to be handed up, and raised later, when the proxy
read every Via for loop detection (a 500 and a logged traceback); now it is
answered 400 with the reason, like a parse error. A response with a bad second Via used
to be handed up as well; now it is dropped and counted.
"""

from __future__ import annotations

import trio

from tests.support.transport import request, response, start_layer
from triosip.testing.proxy import open_udp_peer, start_proxy

BAD_SECOND_VIA = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bad2nd;rport, SIP/2.0/UDP"


async def test_udp_request_with_a_bad_second_via_gets_400_and_a_response_is_dropped() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery, open_udp_peer() as peer:
            running = await start_proxy(nursery, None)
            via = BAD_SECOND_VIA.replace("127.0.0.1:5070", f"127.0.0.1:{peer.port}")
            await peer.send(request("OPTIONS", via=via, call_id="bad-2nd-via"), running.udp)
            answer = await peer.receive_response()
            assert answer.status == 400
            assert "Bad Via" in answer.reason
            assert answer.call_id == "bad-2nd-via"
            assert answer.header_lines("via") == [via]  # every Via, as it came

            # A response with the same defect: nobody hears of it, it is counted.
            await peer.send(response(200, via=via, call_id="bad-2nd-via-200"), running.udp)
            with trio.move_on_after(0.3):
                extra = await peer.receive()
                raise AssertionError(f"unexpected {extra}")
            stats = running.proxy.statistics()
            running.stop()
    assert sum(count for reason, count in stats.parse_errors.items() if "Via" in reason) == 2


async def test_tcp_message_failing_the_check_is_a_parse_error_and_the_stream_goes_on(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(5):
        layer, recorder, [local] = await start_layer(nursery, "tcp:127.0.0.1:0")
        stream = await trio.open_tcp_stream(local.host, local.port)
        async with stream:
            bad = request("INVITE").replace(
                b"Content-Length:", b"Route: <sip:a@@b;lr>\r\nContent-Length:"
            )
            await stream.send_all(bad + request("OPTIONS"))
            error = await recorder.next_error()
            assert error.error.reason.startswith("Bad Route header")
            assert not error.error.fatal
            assert error.error.is_request is True
            # The next message on the connection is handed up.
            inbound = await recorder.next_message()
            assert inbound.message.cseq.method == "OPTIONS"
        assert layer.statistics().parse_errors == 1
        assert layer.statistics().tcp_messages_received == 1
