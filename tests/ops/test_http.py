"""The rest op's own HTTP/1.1 client: TLS, framing, redirects, the pool's bound and reuse.

Real servers on 127.0.0.1: `triosip.testing.http.HttpServer` (under TLS too, with a test CA
from trustme) and small raw ones written here for what it can't say (chunked bodies,
closes).
"""

from __future__ import annotations

import ssl
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
import trustme

from triosip.ops import OpFailed, open_rest_client, rest_ssl_context
from triosip.testing.http import HttpServer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path


async def serve_raw(
    nursery: trio.Nursery, answer: Callable[[trio.SocketStream, bytes], Awaitable[bool]]
) -> str:
    """Serve each request head with ``answer(stream, head)``; False closes the connection."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                if not await answer(stream, head):
                    return

    listeners = await nursery.start(
        partial(trio.serve_tcp, handle, 0, host="127.0.0.1", handler_nursery=nursery)
    )
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


async def serve_tls(nursery: trio.Nursery, cert: trustme.LeafCert) -> HttpServer:
    server = HttpServer()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    listeners = await nursery.start(
        partial(
            trio.serve_ssl_over_tcp,
            server.handle,
            0,
            context,
            host="127.0.0.1",
            https_compatible=True,
            handler_nursery=nursery,
        )
    )
    server.port = listeners[0].transport_listener.socket.getsockname()[1]
    return server


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_https_with_a_trusted_certificate(nursery: trio.Nursery, ca: trustme.CA) -> None:
    server = await serve_tls(nursery, ca.issue_cert("127.0.0.1"))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    url = f"https://127.0.0.1:{server.port}"
    with trio.fail_after(5):
        async with open_rest_client(ssl_context=client_context) as rest:
            first = await rest.post(f"{url}/calls", json={"from": "alice"})
            second = await rest.get(f"{url}/again")
            stats = rest.statistics()
    assert (first.status, first.json()["body"]) == (200, '{"from":"alice"}')
    assert second.json()["target"] == "/again"
    assert server.connections_opened == 1  # kept alive under TLS too
    assert (stats.connections_opened, stats.connections_idle) == (1, 1)


async def test_a_ca_file_is_trusted_as_well_as_the_system_store(
    nursery: trio.Nursery, ca: trustme.CA, tmp_path: Path
) -> None:
    server = await serve_tls(nursery, ca.issue_cert("127.0.0.1"))
    pem = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    context = rest_ssl_context(pem)
    with trio.fail_after(5):
        async with open_rest_client(ssl_context=context) as rest:
            response = await rest.get(f"https://127.0.0.1:{server.port}/private")
    assert (response.status, response.json()["target"]) == (200, "/private")
    # The system's store is still there: its CA certificates are among those trusted.
    assert len(context.get_ca_certs()) > 1


@pytest.mark.parametrize(
    ("issued_for", "trusted", "reason"),
    [
        ("127.0.0.1", False, "certificate verify failed: unable to get local issuer"),
        ("sip.example.org", True, "certificate verify failed: IP address mismatch"),
    ],
    ids=["unknown-ca", "wrong-host"],
)
async def test_a_bad_certificate_is_op_failed(
    nursery: trio.Nursery, ca: trustme.CA, issued_for: str, trusted: bool, reason: str
) -> None:
    server = await serve_tls(nursery, ca.issue_cert(issued_for))
    client_context = ssl.create_default_context()  # the system's CA store: not the test CA
    if trusted:
        ca.configure_trust(client_context)
    url = f"https://127.0.0.1:{server.port}/x"
    with trio.fail_after(5):
        async with open_rest_client(ssl_context=client_context) as rest:
            with pytest.raises(OpFailed, match=f"ConnectError: TLS with 127.0.0.1:.*{reason}"):
                await rest.get(url)
            stats = rest.statistics()
    assert server.requests == []
    assert (stats.requests_failed, stats.connections_opened, stats.connections_closed) == (1, 1, 1)


async def test_the_default_context_checks_certificates(nursery: trio.Nursery) -> None:
    # No ssl_context: the system's CA store, which does not know trustme's CA.
    server = await serve_tls(nursery, trustme.CA().issue_cert("127.0.0.1"))
    with trio.fail_after(5):
        async with open_rest_client() as rest:
            with pytest.raises(OpFailed, match="certificate verify failed"):
                await rest.get(f"https://127.0.0.1:{server.port}/")


async def test_a_chunked_body_is_read_whole(nursery: trio.Nursery) -> None:
    async def answer(stream: trio.SocketStream, head: bytes) -> bool:
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: text/plain; charset=latin-1\r\n\r\n5\r\nhello\r\n"
        )
        await trio.sleep(0.01)  # the rest in another segment
        await stream.send_all(b"3\r\n \xe9!\r\n0\r\n\r\n")
        return True

    url = await serve_raw(nursery, answer)
    with trio.fail_after(5):
        async with open_rest_client() as rest:
            first = await rest.get(f"{url}/a")
            second = await rest.get(f"{url}/b")
            stats = rest.statistics()
    assert (first.content, first.text) == (b"hello \xe9!", "hello é!")
    assert second.text == "hello é!"
    assert stats.connections_opened == 1


async def test_redirects_are_not_followed(nursery: trio.Nursery) -> None:
    heads: list[bytes] = []

    async def answer(stream: trio.SocketStream, head: bytes) -> bool:
        heads.append(head)
        await stream.send_all(
            b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
        )
        return True

    url = await serve_raw(nursery, answer)
    with trio.fail_after(5):
        async with open_rest_client() as rest:
            response = await rest.get(f"{url}/here")
    assert (response.status, response.headers["location"]) == (302, "/elsewhere")
    assert len(heads) == 1


async def test_a_connection_the_server_closes_is_not_reused(nursery: trio.Nursery) -> None:
    closed = trio.Event()
    served = 0

    async def answer(stream: trio.SocketStream, head: bytes) -> bool:
        # Keep-alive by the headers, but the server closes right after (an idle timeout).
        nonlocal served
        served += 1
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        closed.set()
        return False

    url = await serve_raw(nursery, answer)
    with trio.fail_after(5):
        async with open_rest_client() as rest:
            assert (await rest.get(f"{url}/1")).text == "ok"
            await closed.wait()
            await trio.sleep(0.05)  # the FIN reaches the idle connection
            assert (await rest.get(f"{url}/2")).text == "ok"
            stats = rest.statistics()
    assert served == 2
    assert (stats.requests_done, stats.connections_opened) == (2, 2)


async def test_connection_close_is_honoured(nursery: trio.Nursery) -> None:
    async def answer(stream: trio.SocketStream, head: bytes) -> bool:
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
        )
        return False

    url = await serve_raw(nursery, answer)
    with trio.fail_after(5):
        async with open_rest_client() as rest:
            for _ in range(3):
                assert (await rest.get(url)).text == "ok"
            stats = rest.statistics()
    assert (stats.connections_opened, stats.connections_closed, stats.connections_idle) == (3, 3, 0)


async def test_the_pool_is_bounded(nursery: trio.Nursery) -> None:
    busy = most = 0

    async def answer(stream: trio.SocketStream, head: bytes) -> bool:
        nonlocal busy, most
        busy += 1
        most = max(most, busy)
        await trio.sleep(0.02)
        busy -= 1
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    url = await serve_raw(nursery, answer)
    statuses: list[int] = []

    async def get(rest_get: Callable[[str], Awaitable[object]]) -> None:
        response = await rest_get(url)
        statuses.append(response.status)  # type: ignore[attr-defined]

    with trio.fail_after(5):
        async with open_rest_client(max_connections=2) as rest:
            async with trio.open_nursery() as requests:
                for _ in range(6):
                    requests.start_soon(get, rest.get)
            stats = rest.statistics()
    assert statuses == [200] * 6
    assert most == 2
    assert (stats.connections_opened, stats.connections_idle, stats.requests_done) == (2, 2, 6)


async def test_a_truncated_response_is_op_failed(nursery: trio.Nursery) -> None:
    async def answer(stream: trio.SocketStream, head: bytes) -> bool:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
        return False

    url = await serve_raw(nursery, answer)
    with trio.fail_after(5):
        async with open_rest_client() as rest:
            with pytest.raises(OpFailed, match="RemoteProtocolError"):
                await rest.get(url)
            assert rest.statistics().connections_closed == 1


async def test_header_injection_is_refused_before_anything_is_sent(nursery: trio.Nursery) -> None:
    heads: list[bytes] = []

    async def answer(stream: trio.SocketStream, head: bytes) -> bool:
        heads.append(head)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return True

    url = await serve_raw(nursery, answer)
    with trio.fail_after(5):
        async with open_rest_client() as rest:
            with pytest.raises(OpFailed, match="LocalProtocolError: not a header field"):
                await rest.get(url, headers={"X-Id": "1\r\nX-Admin: yes"})
            with pytest.raises(OpFailed, match="LocalProtocolError: not a header field"):
                await rest.get(url, headers={"Bad Name": "1"})
            with pytest.raises(OpFailed, match="LocalProtocolError: not a method"):
                await rest.request("GET /x HTTP/1.1\r\n", url)
            with pytest.raises(OpFailed, match="InvalidURL: not visible ASCII"):
                await rest.get(f"{url}/a b")
            assert (await rest.get(url, headers={"X-Id": "1"})).status == 200
    assert len(heads) == 1
    assert b"x-id: 1" in heads[0].lower()


async def test_head_reads_no_body(nursery: trio.Nursery) -> None:
    async def answer(stream: trio.SocketStream, head: bytes) -> bool:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        return True

    url = await serve_raw(nursery, answer)
    with trio.fail_after(5):
        async with open_rest_client() as rest:
            response = await rest.request("HEAD", url)
    assert (response.status, response.content, response.headers["content-length"]) == (
        200,
        b"",
        "1000",
    )


async def test_a_request_waiting_for_a_connection_can_be_cancelled(
    nursery: trio.Nursery,
) -> None:
    server = HttpServer()
    listeners = await nursery.start(
        partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1", handler_nursery=nursery)
    )
    server.port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(5):
        async with open_rest_client(max_connections=1) as rest:
            async with trio.open_nursery() as requests:
                requests.start_soon(rest.get(f"{server.url}/hang").run)
                await server.hang_started.wait()
                # The pool is full: this one waits for a connection, then is cancelled.
                with trio.move_on_after(0.05):
                    await rest.get(f"{server.url}/waits")
                requests.cancel_scope.cancel()
            await server.hang_closed.wait()
            after = await rest.get(f"{server.url}/after")
            stats = rest.statistics()
    assert after.status == 200
    assert [r.target for r in server.requests] == ["/hang", "/after"]
    assert (stats.requests_cancelled, stats.requests_in_flight) == (2, 0)
    assert (stats.connections_closed_by_cancel, stats.connections_opened) == (1, 2)


async def test_a_full_pool_closes_another_origins_idle_connection(nursery: trio.Nursery) -> None:
    async def answer(stream: trio.SocketStream, head: bytes) -> bool:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    first, second = await serve_raw(nursery, answer), await serve_raw(nursery, answer)
    with trio.fail_after(5):
        async with open_rest_client(max_connections=1) as rest:
            for url in (first, second, first):
                assert (await rest.get(url)).text == "ok"
            stats = rest.statistics()
    assert (stats.connections_opened, stats.connections_closed, stats.connections_idle) == (3, 2, 1)
