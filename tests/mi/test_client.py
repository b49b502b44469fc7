"""The CLI's MI client (`MIClient`) against a real MI: its answers, and its one-line errors.

The client is synchronous (a command that makes one request at a time), so the tests call it
from a worker thread while the proxy and its MI run in the test's trio run.
"""

from __future__ import annotations

import socket
import threading

import pytest
import trio

from tests.support.mi import run_proxy
from triosip.mi import MIClient, MIConfig, MIRefused, MIUnavailable
from triosip.script.api import RequestContext, Routes

TOKEN = "s3cret-token"


def replying_routes() -> Routes:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        await req.reply(200)

    return routes


async def test_answers_as_json_and_text() -> None:
    with trio.fail_after(10):
        async with run_proxy(replying_routes()) as running:

            def ask() -> tuple[object, str]:
                with MIClient(*running.mi_address) as client:
                    return client.get_json("/tasks", {"limit": "3"}), client.get_text("/metrics")

            document, metrics = await trio.to_thread.run_sync(ask)
    assert isinstance(document, dict)
    assert "transactions" in document
    assert "# TYPE" in metrics


async def test_the_token_is_sent_and_its_absence_is_one_line() -> None:
    config = MIConfig(port=0, token=TOKEN, trust_loopback=False)
    with trio.fail_after(10):
        async with run_proxy(replying_routes(), mi=config) as running:
            host, port = running.mi_address

            def ask(token: str | None) -> object:
                with MIClient(host, port, token=token) as client:
                    return client.get_json("/stats")

            allowed = await trio.to_thread.run_sync(ask, TOKEN)
            with pytest.raises(MIRefused) as refused:
                await trio.to_thread.run_sync(ask, None)
    assert isinstance(allowed, dict)
    assert str(refused.value) == f"the triosip MI on {host}:{port} wants its token: give --token"


async def test_an_error_answer_is_one_line_with_the_mi_reason() -> None:
    with trio.fail_after(10):
        async with run_proxy(replying_routes()) as running:
            host, port = running.mi_address

            def ask() -> object:
                with MIClient(host, port) as client:
                    return client.get_json("/tasks", {"summary": "maybe"})

            with pytest.raises(MIRefused) as refused:
                await trio.to_thread.run_sync(ask)
    assert str(refused.value) == (
        f"the triosip MI on {host}:{port} answered 400: summary must be 1 or 0, not 'maybe'"
    )


def test_an_mi_that_does_not_answer_is_one_line() -> None:
    # A socket that listens (the kernel completes the handshake) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with MIClient("127.0.0.1", port, timeout=0.2) as client, pytest.raises(MIUnavailable) as e:
            client.get_json("/stats")
    assert str(e.value) == f"the triosip MI on 127.0.0.1:{port} did not answer in time"


def test_a_peer_that_closes_at_once_is_no_mi() -> None:
    # A socket that accepts the connection and closes it without a word: no MI there.
    with socket.socket() as closing:
        closing.bind(("127.0.0.1", 0))
        closing.listen()
        port = closing.getsockname()[1]

        def accept_and_close() -> None:
            peer, _ = closing.accept()
            peer.close()

        thread = threading.Thread(target=accept_and_close)
        thread.start()
        try:
            with (
                MIClient("127.0.0.1", port, timeout=5) as client,
                pytest.raises(MIUnavailable) as e,
            ):
                client.get_json("/stats")
        finally:
            thread.join(5)
    assert str(e.value) == (
        f"no triosip MI answers on 127.0.0.1:{port}: is `triosip run` running? (--mi)"
    )
