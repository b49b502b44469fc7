"""The MI's HTTP side: who gets in, what a bad request gets, and what a client can hold.

The token rule is tested as a function (every client here is on loopback), then over
HTTP with ``trust_loopback=False``, which makes a loopback client show the token as any
other must. The HTTP limits are tested with raw TCP streams, as a misbehaving client.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from tests.support.mi import run_proxy
from triosip.mi import HttpLimits, MIConfig, is_authorized, parse_mi_address
from triosip.mi._http import HttpRequest, HttpResponse, serve_http
from triosip.script.api import RequestContext, Routes

if TYPE_CHECKING:
    from tests.support.mi import Running

TOKEN = "s3cret-token"


def replying_routes() -> Routes:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        await req.reply(200)

    return routes


@pytest.mark.parametrize(
    ("client", "authorization", "token", "trusted"),
    [
        ("127.0.0.1", None, None, True),
        ("127.0.0.2", None, None, True),
        ("::1", None, TOKEN, True),
        ("::ffff:127.0.0.1", None, None, True),
        ("10.0.0.7", None, TOKEN, False),
        ("10.0.0.7", f"Bearer {TOKEN}", TOKEN, True),
        ("10.0.0.7", f"bearer {TOKEN}", TOKEN, True),  # the scheme is case-insensitive
        ("10.0.0.7", f"Bearer {TOKEN.upper()}", TOKEN, False),  # the token is not
        ("10.0.0.7", f"Bearer {TOKEN}x", TOKEN, False),
        ("10.0.0.7", f"Basic {TOKEN}", TOKEN, False),
        ("10.0.0.7", "Bearer ", TOKEN, False),
        ("10.0.0.7", f"Bearer {TOKEN}", None, False),  # no token set: nobody off loopback
        ("2001:db8::1", f"Bearer {TOKEN}", TOKEN, True),
        ("::ffff:10.0.0.7", None, TOKEN, False),
    ],
)
def test_clients_off_loopback_need_the_token(
    client: str, authorization: str | None, token: str | None, trusted: bool
) -> None:
    assert is_authorized(client, authorization, token=token) is trusted


def test_an_untrusted_loopback_needs_the_token_too() -> None:
    assert not is_authorized("127.0.0.1", None, token=TOKEN, trust_loopback=False)
    assert is_authorized("127.0.0.1", f"Bearer {TOKEN}", token=TOKEN, trust_loopback=False)


@pytest.mark.parametrize(
    ("spec", "address"),
    [
        ("127.0.0.1:8888", ("127.0.0.1", 8888)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:9000", ("::1", 9000)),
        ("localhost:8888", ("localhost", 8888)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_mi_addresses(spec: str, address: tuple[str, int] | None) -> None:
    assert parse_mi_address(spec) == address


@pytest.mark.parametrize(
    "spec", ["8888", ":8888", "127.0.0.1:", "127.0.0.1:http", "::1:8888", "h:70000"]
)
def test_bad_mi_addresses(spec: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_mi_address(spec)


async def test_the_mi_refuses_a_request_without_the_token() -> None:
    config = MIConfig(port=0, token=TOKEN, trust_loopback=False)
    with trio.fail_after(5):
        async with run_proxy(replying_routes(), mi=config) as running:
            refused = await running.mi.get("/stats")
            wrong = await running.mi.get("/stats", headers={"authorization": "Bearer nope"})
            allowed = await running.mi.get("/stats", headers={"authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="triosip"'
    assert (
        refused.json()["error"] == "this client needs the MI token: Authorization: Bearer <token>"
    )
    assert wrong.status_code == 401
    assert allowed.status_code == 200
    assert allowed.json()["version"]


@pytest.mark.parametrize(
    ("method", "target", "status", "error"),
    [
        ("GET", "/nowhere", 404, "no endpoint /nowhere; try one of /tasks, /transactions,"),
        ("POST", "/tasks", 405, "/tasks takes GET, not POST"),
        ("DELETE", "/stats", 405, "/stats takes GET, not DELETE"),
        ("GET", "/tasks?older_than=soon", 400, "older_than must be a number of seconds >= 0"),
        ("GET", "/tasks?older_than=-1", 400, "older_than must be a number of seconds >= 0"),
        ("GET", "/tasks?older_than=nan", 400, "older_than must be a number of seconds >= 0"),
        ("GET", "/tasks?call-id=x", 400, "unknown parameter 'call-id'"),
        ("GET", "/tasks?limit=-1", 400, "limit must be a whole number >= 0, not '-1'"),
        ("GET", "/tasks?limit=" + "9" * 40, 400, "limit must be a whole number >= 0"),
        ("GET", "/tasks?summary=maybe", 400, "summary must be 1 or 0, not 'maybe'"),
        ("GET", "/tasks?method=INVITE&method=BYE", 400, "parameter 'method' given 2 times"),
        ("GET", "/stats?pretty=1", 400, "/stats takes no parameters"),
    ],
)
async def test_bad_requests_get_a_json_error(
    method: str, target: str, status: int, error: str
) -> None:
    with trio.fail_after(5):
        async with run_proxy(replying_routes()) as running:
            response = await running.mi.request(method, target)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["status"] == status
    assert response.json()["error"].startswith(error)


async def test_the_endpoints_answer_json() -> None:
    with trio.fail_after(5):
        async with run_proxy(replying_routes()) as running:
            index = (await running.mi.get("/")).json()
            version = (await running.mi.get("/version")).json()
            transactions = (await running.mi.get("/transactions")).json()
            tasks = await running.tasks(method="invite", older_than="0.5")
    assert index == {
        "endpoints": ["/tasks", "/transactions", "/stats", "/metrics", "/version", "/reload"]
    }
    assert version["version"] == "0.1.0"
    assert version["listeners"] == [str(running.sip)]
    assert version["mi"] == f"http://127.0.0.1:{running.mi_address[1]}"
    assert 0 <= version["uptime"] < 5
    assert transactions == {
        "transactions": [],
        "summary": {"transactions": 0, "matched": 0, "shown": 0, "methods": {}, "states": {}},
    }
    assert tasks["transactions"] == []


# -- HTTP limits, with raw streams -----------------------------------------------------------


async def exchange(running: Running, data: bytes) -> bytes:
    """Send `data` on a new connection and read until the MI closes it."""
    stream = await trio.open_tcp_stream(*running.mi_address)
    async with stream:
        await stream.send_all(data)
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
    return received


def status_and_json(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_malformed_and_oversized_requests_are_refused_and_closed() -> None:
    limits = HttpLimits(max_head=1024, max_body=100)
    with trio.fail_after(5):
        async with run_proxy(replying_routes(), mi=MIConfig(port=0, limits=limits)) as running:
            garbage = await exchange(running, b"HELLO\r\n\r\n")
            huge_head = await exchange(
                running, b"GET /stats HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 2000 + b"\r\n\r\n"
            )
            huge_body = await exchange(
                running, b"POST /reload HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n"
            )
    assert status_and_json(garbage)[0] == 400
    assert status_and_json(huge_head)[0] == 431
    assert status_and_json(huge_body) == (
        413,
        {"error": "request body larger than 100 bytes", "status": 413},
    )


async def test_a_connection_serves_several_requests_then_closes_when_idle() -> None:
    limits = HttpLimits(idle_timeout=0.3)
    with trio.fail_after(5):
        async with run_proxy(replying_routes(), mi=MIConfig(port=0, limits=limits)) as running:
            stream = await trio.open_tcp_stream(*running.mi_address)
            async with stream:
                request = b"GET /version HTTP/1.1\r\nhost: x\r\n\r\n"
                await stream.send_all(request + request)
                received = b""
                start = trio.current_time()
                while chunk := await stream.receive_some(65536):
                    received += chunk
                closed_after = trio.current_time() - start
    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert 0.3 <= closed_after < 2


async def test_one_connection_too_many_gets_a_503() -> None:
    limits = HttpLimits(max_connections=1)
    with trio.fail_after(5):
        async with run_proxy(replying_routes(), mi=MIConfig(port=0, limits=limits)) as running:
            first = await trio.open_tcp_stream(*running.mi_address)
            async with first:
                await first.send_all(b"GET /version HTTP/1.1\r\nhost: x\r\n\r\n")
                assert (await first.receive_some(65536)).startswith(b"HTTP/1.1 200 ")
                second = await exchange(running, b"GET /version HTTP/1.1\r\nhost: x\r\n\r\n")
    assert status_and_json(second) == (
        503,
        {"error": "too many MI connections; try again later", "status": 503},
    )


async def test_a_handler_that_raises_gets_a_500_without_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: HttpRequest) -> HttpResponse:
        raise RuntimeError("the secret internals")

    with trio.fail_after(5):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        address = listeners[0].socket.getsockname()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(serve_http, limits=HttpLimits(), nursery=nursery),
                listeners,
                broken,
                name="http server",
            )
            stream = await trio.open_tcp_stream(*address)
            async with stream:
                await stream.send_all(b"GET /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                received = b""
                while chunk := await stream.receive_some(65536):
                    received += chunk
            # The connection's task ended with it; only the accept loop is left.
            await trio.testing.wait_all_tasks_blocked()
            assert [task.name for task in nursery.child_tasks] == ["http server"]
            nursery.cancel_scope.cancel()
    assert status_and_json(received) == (
        500,
        {"error": "internal error: see the proxy's log", "status": 500},
    )
    assert b"secret" not in received
    assert "the secret internals" in caplog.text


# -- the connection limit counts authenticated connections only ------------------------------

AUTHORIZED = {"authorization": f"Bearer {TOKEN}"}


async def test_idle_unauthenticated_connections_never_keep_a_token_holder_out() -> None:
    # This used to answer the token holder 503 for 30 s: the limit was taken at accept,
    # before any request, so max_connections silent connections locked everyone out.
    limits = HttpLimits(max_connections=2, head_timeout=0.5)
    config = MIConfig(port=0, token=TOKEN, trust_loopback=False, limits=limits)
    with trio.fail_after(5):
        async with run_proxy(replying_routes(), mi=config) as running:
            idle = [await trio.open_tcp_stream(*running.mi_address) for _ in range(4)]
            # One sends half a head and stops; one sends a whole head without the token.
            await idle[0].send_all(b"GET /stats HTTP/1.1\r\nhost: x\r\n")
            refused = await exchange(running, b"GET /stats HTTP/1.1\r\nhost: x\r\n\r\n")
            start = trio.current_time()
            allowed = await running.mi.get("/stats", headers=AUTHORIZED)
            assert trio.current_time() - start < 0.4  # at once, not after the idle ones left
            assert allowed.status_code == 200
            # The silent ones are closed once the head timeout has passed since they came.
            for stream in idle:
                async with stream:
                    assert await stream.receive_some(65536) == b""
            closed_after = trio.current_time() - start
    assert status_and_json(refused)[0] == 401
    assert closed_after < 0.6


async def test_the_oldest_unauthenticated_connection_makes_room_for_a_new_one() -> None:
    limits = HttpLimits(max_pending=2, head_timeout=30)
    config = MIConfig(port=0, token=TOKEN, trust_loopback=False, limits=limits)
    with trio.fail_after(5):
        async with run_proxy(replying_routes(), mi=config) as running:
            oldest = await trio.open_tcp_stream(*running.mi_address)
            others = [await trio.open_tcp_stream(*running.mi_address) for _ in range(2)]
            async with oldest:
                assert await oldest.receive_some(65536) == b""  # closed for the newest
            # The others still wait for their head, and one of them can still send it.
            async with others[0], others[1]:
                await others[1].send_all(
                    b"GET /version HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
                    + TOKEN.encode()
                    + b"\r\n\r\n"
                )
                assert (await others[1].receive_some(65536)).startswith(b"HTTP/1.1 200 ")
                with trio.move_on_after(0.1) as waiting:
                    await others[0].receive_some(65536)
                assert waiting.cancelled_caught


async def test_a_request_without_the_token_is_answered_and_its_connection_closed() -> None:
    limits = HttpLimits(max_connections=1)
    config = MIConfig(port=0, token=TOKEN, trust_loopback=False, limits=limits)
    with trio.fail_after(5):
        async with run_proxy(replying_routes(), mi=config) as running:
            held = await trio.open_tcp_stream(*running.mi_address)
            async with held:
                await held.send_all(
                    b"GET /version HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
                    + TOKEN.encode()
                    + b"\r\n\r\n"
                )
                assert (await held.receive_some(65536)).startswith(b"HTTP/1.1 200 ")
                # The one authenticated slot is taken: a refused client still gets its 401
                # (not a 503), and a token holder its 503.
                refused = await exchange(running, b"GET /stats HTTP/1.1\r\nhost: x\r\n\r\n")
                busy = await running.mi.get("/stats", headers=AUTHORIZED)
    assert status_and_json(refused)[0] == 401
    assert busy.status_code == 503
