"""Run a triosip `Proxy` in-process, for tests: real sockets on 127.0.0.1, free ports.

The proxy runs through `triosip.app.serve_triosip`, as ``triosip run`` runs it, in a task
of the caller's nursery (named ``proxy under test``), with its
listeners bound to port 0 so that tests never collide, and with the routes given as a
`Routes` object built in the test, a routes file, or None for the default routes.
Everything it starts (transport, transactions, the script environment's launched work)
runs under that task's cancel scope: `RunningProxy.stop` cancels it, and so does the
end of the caller's nursery.

Example::

    async with trio.open_nursery() as nursery:
        running = await start_proxy(
            nursery, None, params={"downstream": f"udp:{uas.address}"}, fr_timeout=1.0
        )
        result = await run_uac(uas.address, remote_sending_address=running.udp.host_port)
        running.stop()

The callers and callees of tests that need exact control of each message (timers,
malformed bytes, a CANCEL at a given moment) are `UdpPeer`s: a UDP socket on 127.0.0.1
that builds requests naming itself in their Via, answers them, and records what it got
with the trio time, so that it works under ``autojump_clock`` as on the real clock.

Nothing in the rest of triosip imports this module.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import secrets
import socket
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from triosip.app import Running, serve_triosip
from triosip.config import Config
from triosip.errors import TriosipError
from triosip.script import ScriptEnvironment, ScriptHandlers, load_routes
from triosip.script.api import Routes
from triosip.sip import URI, ParseError, Request, Response, build_response, parse_message
from triosip.transport import Address

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence
    from pathlib import Path

    from triosip.proxy import Proxy
    from triosip.transaction import TimerConfig

__all__ = [
    "DEFAULT_LISTEN",
    "LOCAL_IP",
    "ProxyHarnessError",
    "Received",
    "RunningProxy",
    "UdpPeer",
    "local_config",
    "open_udp_peer",
    "start_proxy",
]

logger = logging.getLogger(__name__)

LOCAL_IP = "127.0.0.1"
"""Where the proxy under test listens by default."""

DEFAULT_LISTEN = (Address("udp", LOCAL_IP, 0), Address("tcp", LOCAL_IP, 0))
"""UDP and TCP on 127.0.0.1, each on a port the kernel picks."""


class ProxyHarnessError(TriosipError):
    """The proxy under test lacks what the test asked of it (a listener of a transport)."""


def local_config(**settings: Any) -> Config:
    """A `Config` for a proxy under test: UDP and TCP on 127.0.0.1 on free ports, no
    database, no REST client, no MI and no GC tuning, unless `settings` say otherwise.

    Args:
        settings: `Config` fields.
    """
    base: dict[str, Any] = {
        "listen": DEFAULT_LISTEN,
        "db_url": None,
        "rest_connections": None,
        "freeze_gc": False,
    }
    return Config(**{**base, **settings})


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningProxy:
    """A proxy running in a test's nursery, as `start_proxy` returns it.

    Attributes:
        proxy: the proxy itself: its ``statistics()``, ``transactions``, ``transport``...
        handlers: the script handlers it started with (swap ``proxy.handlers`` to reload).
        listeners: the bound addresses, in the order asked, with their real ports.
        scope: the cancel scope of the task that runs it; `stop` cancels it.
        running: what `serve_triosip` reported (its ``shut_down``, the environment).
    """

    proxy: Proxy
    handlers: ScriptHandlers
    listeners: tuple[Address, ...]
    scope: trio.CancelScope
    running: Running

    @property
    def udp(self) -> Address:
        """The first UDP listener.

        Raises:
            ProxyHarnessError: the proxy has no UDP listener.
        """
        return self._first("udp")

    @property
    def tcp(self) -> Address:
        """The first TCP listener.

        Raises:
            ProxyHarnessError: the proxy has no TCP listener.
        """
        return self._first("tcp")

    def stop(self) -> None:
        """Cancel the proxy and everything it runs; it is gone once the nursery's
        block (or the test) has ended."""
        self.scope.cancel()

    def _first(self, transport: str) -> Address:
        for address in self.listeners:
            if address.transport == transport:
                return address
        raise ProxyHarnessError(f"the proxy under test has no {transport} listener")


async def start_proxy(
    nursery: trio.Nursery,
    routes: Routes | str | Path | None,
    *,
    params: Mapping[str, str] | None = None,
    fr_timeout: float | None = None,
    fr_inv_timeout: float | None = None,
    timers: TimerConfig | None = None,
    listen: Sequence[Address] | None = None,
    reply_to_via: bool = False,
    environment: ScriptEnvironment | None = None,
    config: Config | None = None,
) -> RunningProxy:
    """Start a proxy in `nursery` through `serve_triosip` and return once it listens.

    Everything it runs (transport, transactions and their work, the script environment's
    launched work) runs in one task of `nursery` named ``proxy under test``. Cancelling
    `nursery`, or `RunningProxy.stop`, stops them all.

    Args:
        nursery: where the proxy runs.
        routes: a `Routes` built by the test, the path of a routes file, or None for the
            default routes.
        params: the script parameters (``--define``); for a `Routes` object, they replace
            its ``params`` when given.
        fr_timeout: tm's fr_timeout, in seconds; the `Config` default when None.
        fr_inv_timeout: tm's fr_inv_timeout, in seconds; the `Config` default when None.
        timers: T1, T2, T4; RFC 3261's defaults when None.
        listen: the addresses to listen on; UDP and TCP on 127.0.0.1, free ports, when None.
        reply_to_via: whether responses go where the Via says (``--reply-to-via``).
        environment: what routes reach beyond their transaction (``req.db``,
            ``req.rest``, ``launch()``); an empty one when None.
        config: the settings the others are laid over; `local_config()` when None.

    Returns:
        The running proxy, with its bound addresses.

    Raises:
        RoutesLoadError: the routes file does not load.
        TransportError: a listener could not be opened.
        ConfigError: a setting out of range.
    """
    settings: dict[str, Any] = {"reply_to_via": reply_to_via} if reply_to_via else {}
    if fr_timeout is not None:
        settings["fr_timeout"] = fr_timeout
    if fr_inv_timeout is not None:
        settings["fr_inv_timeout"] = fr_inv_timeout
    if timers is not None:
        settings.update(t1=timers.t1, t2=timers.t2, t4=timers.t4)
    if listen is not None:
        settings["listen"] = tuple(listen)
    base = config or local_config()
    if isinstance(routes, Routes):
        loaded = routes
        if params is not None:
            loaded.params = dict(params)
    else:
        loaded = load_routes(routes, params or {})
    running: Running = await nursery.start(
        functools.partial(
            serve_triosip,
            dataclasses.replace(base, **settings),
            routes=loaded,
            environment=environment,
        ),
        name="proxy under test",
    )
    logger.debug("proxy under test on %s", ", ".join(str(a) for a in running.listeners))
    handlers = running.proxy.handlers
    assert isinstance(handlers, ScriptHandlers)
    return RunningProxy(
        proxy=running.proxy,
        handlers=handlers,
        listeners=running.listeners,
        scope=running.scope,
        running=running,
    )


# -- raw SIP peers --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    """One message a `UdpPeer` received.

    Attributes:
        message: the parsed request or response.
        source: where it came from.
        at: ``trio.current_time()`` when it was read.
    """

    message: Request | Response
    source: Address
    at: float


@dataclass(eq=False)
class UdpPeer:
    """A SIP endpoint on a UDP socket of 127.0.0.1, driven message by message.

    A task of `open_udp_peer` reads the socket all the time, so that each message is
    stamped with the time it arrived, whenever the test gets round to reading it.

    Attributes:
        sock: the bound trio socket.
        address: its address.
        strict: whether a datagram that is no SIP message ends `serve` (the default), or
            is kept in `unparsable` (a fuzz run's peers, which expect garbage).
        received: every message received so far, in order, read by the test or not.
        unparsable: when not `strict`, each datagram that did not parse, with the error.
    """

    sock: trio.socket.SocketType
    address: Address
    strict: bool = True
    received: list[Received] = field(default_factory=list)
    unparsable: list[tuple[bytes, str]] = field(default_factory=list)
    _read: int = field(default=0, init=False)
    _arrived: trio.Event = field(default_factory=trio.Event, init=False)

    @property
    def port(self) -> int:
        """The port the peer is bound to."""
        return self.address.port

    @property
    def destination(self) -> str:
        """The peer as a routes parameter names a next hop: ``udp:host:port``."""
        return f"udp:{self.address.host_port}"

    @property
    def messages(self) -> list[Request | Response]:
        """The messages of `received`, without their source and time."""
        return [received.message for received in self.received]

    def request(
        self,
        method: str = "INVITE",
        uri: str = "sip:bob@example.com",
        *,
        call_id: str | None = None,
        cseq: int = 1,
        branch: str | None = None,
        from_tag: str = "caller",
        to_tag: str | None = None,
        from_uri: str = "sip:alice@example.com",
        to_uri: str = "sip:bob@example.com",
        max_forwards: int | None = 70,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Request:
        """A request as a UAC sends it, its Via and Contact naming this peer.

        Args:
            method: the method; the CSeq's too.
            uri: the Request-URI.
            call_id: the Call-ID; a fresh random one when None.
            cseq: the CSeq number.
            branch: the Via branch; a fresh ``z9hG4bK`` one when None.
            from_tag: the From tag.
            to_tag: the To tag (an in-dialog request), or None.
            from_uri: the From URI; its user is the Contact's too.
            to_uri: the To URI.
            max_forwards: the Max-Forwards value, or None for no such header.
            headers: more header lines, after the mandatory ones.
            body: the body; Content-Length is its length.

        Returns:
            The request.
        """
        contact_user = URI(from_uri).user or ""
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.address.host_port};branch="
            f"{branch or 'z9hG4bK-' + secrets.token_hex(8)}",
            *([] if max_forwards is None else [f"Max-Forwards: {max_forwards}"]),
            f"From: <{from_uri}>;tag={from_tag}",
            f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {call_id or secrets.token_hex(8)}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{contact_user}@{self.address.host_port}>",
            *(f"{name}: {value}" for name, value in headers),
            f"Content-Length: {len(body)}",
        ]
        message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        assert isinstance(message, Request)
        return message

    def ack(self, invite: Request, response: Response) -> Request:
        """The ACK of a non-2xx final response to `invite` (RFC 3261 §17.1.1.3): same
        branch, Request-URI and From, the response's To, CSeq method ACK."""
        return self.request(
            "ACK",
            invite.uri_raw,
            call_id=invite.call_id,
            cseq=invite.cseq.number,
            branch=invite.top_via.branch,
            from_tag=invite.from_.tag or "",
            to_tag=response.to.tag,
            from_uri=invite.from_.uri_text,
            to_uri=response.to.uri_text,
        )

    def cancel(self, invite: Request) -> Request:
        """The CANCEL of `invite` (RFC 3261 §9.1): same branch, Request-URI, Call-ID,
        From, To and CSeq number."""
        return self.request(
            "CANCEL",
            invite.uri_raw,
            call_id=invite.call_id,
            cseq=invite.cseq.number,
            branch=invite.top_via.branch,
            from_tag=invite.from_.tag or "",
            from_uri=invite.from_.uri_text,
            to_uri=invite.to.uri_text,
        )

    async def send(self, message: Request | Response | bytes, to: Address) -> None:
        """Send a message, or any bytes, to `to`."""
        await self.sock.sendto(bytes(message), (to.host, to.port))

    async def receive(self) -> Received:
        """The next message not read yet, whatever it is (waiting for it if need be)."""
        while self._read >= len(self.received):
            await self._arrived.wait()
        received = self.received[self._read]
        self._read += 1
        return received

    async def serve(self) -> None:
        """Read the socket until cancelled, recording each message as it arrives.

        Raises:
            ParseError: what came is no SIP message (the proxy under test sent garbage),
                when `strict`.
        """
        while True:
            data, source = await self.sock.recvfrom(65535)
            try:
                message = parse_message(data)
            except ParseError as exc:
                if self.strict:
                    raise
                self.unparsable.append((data, str(exc)))
                continue
            self.received.append(
                Received(message, Address("udp", source[0], source[1]), trio.current_time())
            )
            self._arrived.set()
            self._arrived = trio.Event()

    async def receive_request(self, method: str | None = None) -> tuple[Request, Address]:
        """The next request (of `method`, if given), past whatever else comes first."""
        while True:
            received = await self.receive()
            message = received.message
            if isinstance(message, Request) and method in (None, message.method):
                return message, received.source

    async def receive_response(
        self, *, final: bool = True, method: str | None = None, status: int | None = None
    ) -> Response:
        """The next response (of `status`, if given, else a final one if `final`; to
        `method`, if given), past whatever else comes first."""
        while True:
            message = (await self.receive()).message
            if not isinstance(message, Response):
                continue
            if status is not None and message.status != status:
                continue
            if status is None and final and message.status < 200:
                continue
            if method is None or message.cseq.method == method:
                return message

    async def respond(
        self,
        request: Request,
        status: int,
        to: Address,
        *,
        to_tag: str = "callee",
        headers: Sequence[tuple[str, str]] = (),
    ) -> Response:
        """Answer `request` (as a UAS) with `status`, sent to `to`, and return the answer."""
        response = build_response(request, status, to_tag=to_tag, headers=headers)
        await self.send(response, to)
        return response

    async def answer(
        self,
        *statuses: int,
        to_tag: str = "callee",
        headers: Sequence[tuple[str, str]] = (),
    ) -> Request:
        """Take the next message, which must be a request, and answer it (as a UAS, to
        where it came from) with each of `statuses` in turn.

        Returns:
            The request.

        Raises:
            ProxyHarnessError: the next message is a response.
        """
        received = await self.receive()
        request = received.message
        if not isinstance(request, Request):
            raise ProxyHarnessError(f"{self.address} expected a request, got {request!r}")
        for status in statuses:
            await self.respond(request, status, received.source, to_tag=to_tag, headers=headers)
        return request


@asynccontextmanager
async def open_udp_peer(host: str = LOCAL_IP, *, strict: bool = True) -> AsyncIterator[UdpPeer]:
    """A `UdpPeer` on a free port of `host`, closed when the block ends.

    Owns the task that reads the peer's socket (``udp peer <address>``), cancelled when
    the block ends; a message that is not SIP ends it with a `ParseError`, if `strict`.

    Args:
        host: the IP literal to bind.
        strict: see `UdpPeer.strict`.

    Yields:
        The peer.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
        await sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        peer = UdpPeer(sock, Address("udp", host, port), strict=strict)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.serve, name=f"udp peer {peer.address}")
            yield peer
            nursery.cancel_scope.cancel()
