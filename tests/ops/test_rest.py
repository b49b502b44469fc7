"""The ``rest`` op against a real HTTP/1.1 server on 127.0.0.1
(`triosip.testing.http.HttpServer`)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest
import trio

from triosip.ops import OpFailed, OpTimeout, RestClient, open_rest_client, run_with_timeout
from triosip.testing.http import HttpServer, start_http_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def server(nursery: trio.Nursery) -> HttpServer:
    return await start_http_server(nursery)


@pytest.fixture
async def rest() -> AsyncIterator[RestClient]:
    async with open_rest_client() as client:
        yield client


async def test_get_with_params_and_headers(server: HttpServer, rest: RestClient) -> None:
    op = rest.get(f"{server.url}/users", params={"name": "alice"}, headers={"X-Test": "1"})
    assert (op.kind, op.description) == ("rest", f"GET {server.url}/users")
    with trio.fail_after(5):
        response = await op
    assert response.status == 200
    assert response.ok
    assert response.request == f"GET {server.url}/users"
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-repeated"] == "a, b"
    echoed = response.json()
    assert (echoed["method"], echoed["target"]) == ("GET", "/users?name=alice")
    assert echoed["headers"]["x-test"] == "1"
    assert response.text == response.content.decode()


async def test_post_and_put_send_json_and_raw_bodies(server: HttpServer, rest: RestClient) -> None:
    with trio.fail_after(5):
        posted = await rest.post(f"{server.url}/calls", json={"from": "alice", "n": [1, 2]})
        put = await rest.put(f"{server.url}/calls/1", data="raw body é")
        deleted = await rest.delete(f"{server.url}/calls/1")
    assert posted.json()["body"] == '{"from":"alice","n":[1,2]}'
    assert server.requests[0].headers["content-type"] == "application/json"
    assert put.json()["body"] == "raw body é"
    assert server.requests[1].body == "raw body é".encode()
    assert deleted.json()["method"] == "DELETE"
    # One pooled connection served all three requests.
    assert server.connections_opened == 1
    stats = rest.statistics()
    assert (stats.requests_done, stats.requests_in_flight) == (3, 0)


async def test_a_non_2xx_status_is_a_response_not_an_error(
    server: HttpServer, rest: RestClient
) -> None:
    with trio.fail_after(5):
        response = await rest.get(f"{server.url}/status/404")
    assert response.status == 404
    assert not response.ok
    assert response.text == "status 404"
    assert rest.statistics().requests_failed == 0


async def test_a_body_that_is_not_json(server: HttpServer, rest: RestClient) -> None:
    with trio.fail_after(5):
        response = await rest.get(f"{server.url}/notjson")
    with pytest.raises(OpFailed, match="response body is not JSON") as caught:
        response.json()
    assert caught.value.description == f"GET {server.url}/notjson"


async def test_a_cancelled_request_closes_its_connection(
    server: HttpServer, rest: RestClient
) -> None:
    with trio.fail_after(5):
        await rest.get(f"{server.url}/first")  # leaves one idle connection in the pool
        assert server.connections_opened == 1
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(rest.get(f"{server.url}/hang").run)
                await server.hang_started.wait()
                cancelled_at = trio.current_time()
                scope.cancel()
        assert trio.current_time() - cancelled_at < 0.5
        # The server sees the connection close: it was not left half-used in the pool...
        with trio.fail_after(1):
            await server.hang_closed.wait()
        assert server.connections_closed == 1
        # ... and the next requests get a clean connection, which the pool then reuses.
        assert (await rest.get(f"{server.url}/after")).status == 200
        assert (await rest.get(f"{server.url}/again")).status == 200
    assert [r.target for r in server.requests] == ["/first", "/hang", "/after", "/again"]
    assert server.connections_opened == 2
    stats = rest.statistics()
    assert (stats.requests_cancelled, stats.requests_done, stats.requests_in_flight) == (1, 3, 0)


async def test_run_with_timeout_gives_op_timeout_and_closes_the_connection(
    server: HttpServer, rest: RestClient
) -> None:
    with trio.fail_after(5):
        with pytest.raises(OpTimeout, match=r"timed out after 0\.1 s") as caught:
            await run_with_timeout(rest.get(f"{server.url}/hang"), 0.1)
        assert caught.value.description == f"GET {server.url}/hang"
        with trio.fail_after(1):
            await server.hang_closed.wait()


async def test_the_client_timeout_is_op_timeout(server: HttpServer) -> None:
    with trio.fail_after(5):
        async with open_rest_client(timeout=0.1) as rest:
            with pytest.raises(OpTimeout, match=r"timed out after 0\.1 s"):
                await rest.get(f"{server.url}/hang")
            assert rest.statistics().requests_timed_out == 1


async def test_the_client_timeout_holds_under_a_looser_op_timeout(server: HttpServer) -> None:
    # The client leaves its own limit out only where a tighter deadline holds already: under
    # an op timeout of 5 s, its 0.1 s still ends the request.
    with trio.fail_after(2):
        async with open_rest_client(timeout=0.1) as rest:
            started = trio.current_time()
            with pytest.raises(OpTimeout, match=r"timed out after 0\.1 s"):
                await run_with_timeout(rest.get(f"{server.url}/hang"), 5)
            assert trio.current_time() - started < 1
            assert rest.statistics().requests_timed_out == 1
            with trio.fail_after(1):
                await server.hang_closed.wait()


async def test_a_refused_connection_is_op_failed(rest: RestClient) -> None:
    # A bound TCP socket that does not listen refuses connections.
    with socket.socket() as closed_port:
        closed_port.bind(("127.0.0.1", 0))
        port = closed_port.getsockname()[1]
        with trio.fail_after(5), pytest.raises(OpFailed, match="ConnectError") as caught:
            await rest.post(f"http://127.0.0.1:{port}/x", json={})
    assert caught.value.kind == "rest"
    assert caught.value.description == f"POST http://127.0.0.1:{port}/x"
    assert rest.statistics().requests_failed == 1


async def test_bad_urls_are_op_failed(rest: RestClient) -> None:
    with trio.fail_after(5):
        with pytest.raises(OpFailed, match="UnsupportedProtocol"):
            await rest.get("ftp://127.0.0.1/file")
        with pytest.raises(OpFailed, match="InvalidURL: Invalid IPv6 URL"):
            await rest.get("http://[::1")
        with pytest.raises(OpFailed, match="InvalidURL: Port out of range"):
            await rest.get("http://127.0.0.1:99999/")
        with pytest.raises(OpFailed, match="InvalidURL: no host"):
            await rest.get("http:///path")
    assert rest.statistics().requests_failed == 4


async def test_a_body_is_json_or_data_not_both(rest: RestClient) -> None:
    with pytest.raises(ValueError, match="not both"):
        rest.post("http://127.0.0.1/", json={}, data="x")
