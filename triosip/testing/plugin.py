"""The triosip pytest plugin: test your own routes file with real sockets.

Installed with triosip (entry point ``pytest11``), it gives tests these fixtures; they
need pytest-trio (``trio_mode = true``, or ``@pytest.mark.trio`` on each test):

- ``triosip_proxy``: ``await triosip_proxy("routes/mine.py", defines={...})`` starts a
  proxy running the routes file on 127.0.0.1 (UDP and TCP, free ports), through
  `triosip.app.serve_triosip` as ``triosip run`` does, and returns its `RunningProxy`
  (``.udp`` is where to send). It is stopped at the end of the test.
- ``triosip_peer``: ``await triosip_peer()`` is a `UdpPeer` on 127.0.0.1 to send requests
  from (``peer.request(...)``, ``peer.send(...)``, ``peer.receive_response()``);
  ``await triosip_peer(Answer(486))`` a callee that answers 486, ``Answer(200,
  ring=True)`` one that rings then answers, ``Answer(None, ring=True)`` one that rings
  until CANCELled, ``Answer(None)`` one that stays silent.
- ``triosip_no_leaks``: the test fails if it leaves an fd open, a child process or a
  worker thread, once its trio run has ended (list it first, before the trio fixtures).

`Answer` comes from ``triosip.testing.callee``. Everything reads trio's clock, so the
fixtures work under pytest-trio's ``autojump_clock`` (a `MockClock`): fr timers of 30 s
pass at once. The README, "Testing your routes", has an example.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from trio import TASK_STATUS_IGNORED
from trio import sleep_forever as _sleep_forever

# triosip itself is imported by the fixtures, when a test uses them: pytest loads this
# plugin in every session, before coverage starts measuring (trio is no part of it).
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping
    from pathlib import Path

    import trio

    from triosip.testing.callee import Answer
    from triosip.testing.proxy import RunningProxy, UdpPeer

__all__ = ["triosip_no_leaks", "triosip_peer", "triosip_proxy"]


@pytest.fixture
def triosip_no_leaks() -> Iterator[None]:
    """Fail the test if it leaves an fd open, a child process or a worker thread."""
    from triosip.testing.leaks import leak_check

    with leak_check():
        yield


@pytest.fixture
async def triosip_proxy(nursery: trio.Nursery) -> Callable[..., Awaitable[RunningProxy]]:
    """Start proxies running a routes file: ``await triosip_proxy(path, defines=...)``.

    The factory takes the routes file (None for the default routes), ``defines`` (the
    ``--define`` parameters), and any keyword of `triosip.testing.proxy.start_proxy`
    (``fr_timeout``, ``fr_inv_timeout``, ``timers``, ``environment``...).
    """

    from triosip.testing.proxy import start_proxy

    async def start(
        routes: str | Path | None, *, defines: Mapping[str, str] | None = None, **options: Any
    ) -> RunningProxy:
        return await start_proxy(nursery, routes, params=defines or {}, **options)

    return start


@pytest.fixture
async def triosip_peer(nursery: trio.Nursery) -> Callable[..., Awaitable[UdpPeer]]:
    """Open SIP peers on 127.0.0.1: ``await triosip_peer(answer=None)``; with an `Answer`,
    the peer is a callee that answers INVITEs so (`serve_callee`). Each peer runs in a
    task of pytest-trio's ``nursery``, closed at the end of the test."""

    async def open_peer(answer: Answer | None = None) -> UdpPeer:
        peer: UdpPeer = await nursery.start(_serve_peer, answer, name="triosip peer")
        return peer

    return open_peer


async def _serve_peer(
    answer: Answer | None, *, task_status: trio.TaskStatus[UdpPeer] = TASK_STATUS_IGNORED
) -> None:
    from triosip.testing.callee import serve_callee
    from triosip.testing.proxy import open_udp_peer

    async with open_udp_peer() as peer:
        task_status.started(peer)
        if answer is not None:
            await serve_callee(peer, answer)
        else:
            await _sleep_forever()
