"""The transport layer: UDP and TCP listeners, connections and sends (RFC 3261 §18).

Theory of operation
-------------------

`TransportLayer.serve` binds every listener, then runs one task per UDP socket, one per
TCP listener and one per TCP connection, all in its own nursery; it never returns. The
layer is a façade over two parts that each own their sockets and tables:

* **UDP** (``_udp.py``, `UdpTransport`): a receive loop per socket that parses each
  datagram and hands it to ``on_message`` synchronously, and sends from the listener's
  own socket.
* **TCP** (``_tcp.py``, `TcpTransport`): listeners, connections in both directions
  (``_connection.py``, `TcpConnection`), stream framing and the idle timeout.
* **Errors.** A message is accepted once it parses and passes
  `triosip.sip.check_message`. A `triosip.sip.ParseError` from either goes to
  ``on_parse_error``, whose caller answers
  (400, 413, 505...) by calling `TransportLayer.send` back to the source. Any other
  exception from the callbacks is a bug and propagates: it is the callback's author who
  decides what to isolate.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ._address import TRANSPORTS, Address
from ._errors import TransportError
from ._limits import DEFAULT_LIMITS, TransportLimits
from ._names import LocalNames
from ._sockets import bind_tcp, bind_udp
from ._statistics import Counters, TransportStatistics
from ._tcp import TcpTransport
from ._udp import UdpTransport

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from triosip.sip import ParseError

    from ._connection import TcpConnection
    from .base import Inbound

logger = logging.getLogger(__name__)


class TransportLayer:
    """UDP and TCP listeners, TCP connections, and sending, for IPv4 and IPv6.

    Args:
        listen: the addresses to listen on (port 0 picks a free port).
        on_message: called with each message received, synchronously, in the receiving
            task: it must not block (start a task, or ``send_nowait`` into a channel).
        on_parse_error: called with the error, the bytes (the datagram; for TCP the
            bytes last read from the stream, as the parser keeps no copy of the bad
            message), the source and the local address, synchronously as well.
        limits: sizes, bounds and timeouts.
        advertise: for some `listen` addresses, the host and port (None: the bound one)
            their Via and Record-Route name (``--advertise``).
        aliases: other names of this proxy, with a port or None for every port
            (``--alias``).

    Raises:
        ValueError: a listen address has a transport other than udp or tcp.
    """

    def __init__(
        self,
        listen: Sequence[Address],
        *,
        on_message: Callable[[Inbound], None],
        on_parse_error: Callable[[ParseError, bytes, Address, Address], None],
        limits: TransportLimits = DEFAULT_LIMITS,
        advertise: Mapping[Address, tuple[str, int | None]] | None = None,
        aliases: Iterable[tuple[str, int | None]] = (),
    ) -> None:
        for address in listen:
            if address.transport not in TRANSPORTS:
                raise ValueError(f"cannot listen on {address}: use udp or tcp")
        self._listen = tuple(listen)
        self._limits = limits
        self._counters = counters = Counters()
        self._nursery: trio.Nursery | None = None
        self.listeners: tuple[Address, ...] = ()
        """The bound addresses (the real ports when 0 was asked), once `serve` started."""
        self._advertise = dict(advertise or {})
        self._aliases = tuple(aliases)
        self.names = LocalNames((), {}, ())
        """This proxy's names ("myself", and what Via and Record-Route say), once `serve`
        started."""
        self._udp = UdpTransport(
            on_message=on_message, on_parse_error=on_parse_error, limits=limits, counters=counters
        )
        self._tcp = TcpTransport(
            on_message=on_message, on_parse_error=on_parse_error, limits=limits, counters=counters
        )

    @property
    def limits(self) -> TransportLimits:
        """The sizes, bounds and timeouts this layer was built with."""
        return self._limits

    # --- serving ---------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind every listener, then receive and keep TCP connections until cancelled.

        Owns one task per UDP socket (``receive udp:<address>``), per TCP listener
        (``accept tcp:<address>``) and per TCP connection (``tcp <peer>``), in its own
        nursery; outbound connections opened by `send` run there too. Never returns;
        cancel it to stop, which closes every socket.

        Args:
            task_status: given the list of bound addresses, in the order of ``listen``
                (with the real ports when 0 was asked), once every listener is bound.

        Raises:
            TransportError: a listener could not be opened, e.g. ``cannot listen on
                udp:127.0.0.1:5060: address already in use``.
            RuntimeError: the layer is serving already.
        """
        if self._nursery is not None:
            raise RuntimeError("this TransportLayer is serving already")
        udp: list[tuple[socket.socket, Address]] = []
        tcp: list[tuple[trio.SocketListener, Address]] = []
        bound: list[Address] = []
        try:
            for address in self._listen:
                if address.transport == "udp":
                    sock, local = bind_udp(address, buffer_bytes=self._limits.udp_buffer_bytes)
                    udp.append((sock, local))
                else:
                    listener, local = bind_tcp(address)
                    tcp.append((listener, local))
                bound.append(local)
            async with trio.open_nursery() as nursery:
                for sock, local in udp:
                    self._udp.add(sock, local)
                    nursery.start_soon(self._udp.serve, sock, local, name=f"receive {local}")
                for listener, local in tcp:
                    nursery.start_soon(
                        self._tcp.serve_listener, listener, local, name=f"accept {local}"
                    )
                self._nursery = self._tcp.nursery = nursery
                self.listeners = tuple(bound)
                advertised = {
                    local: self._advertise[asked]
                    for asked, local in zip(self._listen, bound, strict=True)
                    if asked in self._advertise
                }
                self.names = LocalNames(bound, advertised, self._aliases)
                logger.info("listening on %s", ", ".join(str(a) for a in bound))
                task_status.started(bound)
                await trio.sleep_forever()
        finally:
            self._nursery = self._tcp.nursery = None
            self.listeners = ()
            self._udp.clear()
            for sock, _ in udp:
                sock.close()
            for listener, _ in tcp:
                listener.socket.close()

    def local_address(self, transport: str, family_of: str | None = None) -> Address:
        """The listener to name in a Via or a Record-Route for messages sent on `transport`.

        Args:
            transport: ``"udp"`` or ``"tcp"``.
            family_of: an IP literal (or any host with a ``:`` for IPv6) whose address
                family the listener should have: the destination's host, typically. With
                none, or none of that family, the first listener of the transport.

        Returns:
            A bound listener address.

        Raises:
            TransportError: no listener of that transport.
        """
        want_ipv6 = None if family_of is None else ":" in family_of
        fallback: Address | None = None
        for address in self.listeners:
            if address.transport != transport:
                continue
            if want_ipv6 is None or address.is_ipv6 == want_ipv6:
                return address
            if fallback is None:
                fallback = address
        if fallback is None:
            raise TransportError(f"no {transport} listener")
        return fallback

    def advertised(self, local: Address, toward: str) -> Address:
        """What a Via or a Record-Route names for `local` sending toward the IP `toward`:
        its ``--advertise`` name, the address the kernel sends from for a wildcard
        listener, else `local` itself (`LocalNames.advertised`)."""
        return self.names.advertised(local, toward)

    def statistics(self) -> TransportStatistics:
        """A snapshot of the counters."""
        return self._counters.snapshot()

    # --- sending -----------------------------------------------------------------------

    def send_nowait(
        self, data: bytes, destination: Address, *, local: Address | None = None
    ) -> bool:
        """Send a UDP datagram now, if the socket's send buffer takes it.

        Args:
            data: the datagram.
            destination: where to send it.
            local: the UDP listener to send from (default: the first of the destination's
                address family).

        Returns:
            True if the kernel took it. False if the buffer is full (counted in
            ``udp_send_would_block``), if the destination is not UDP, or if the send
            failed: in every case the caller may ``await send(...)``, which waits, or
            raises a `TransportError` saying why.
        """
        if destination.transport != "udp":
            return False
        return self._udp.send_nowait(data, destination, local)

    async def send(
        self,
        data: bytes,
        destination: Address,
        *,
        connection: TcpConnection | None = None,
        local: Address | None = None,
    ) -> None:
        """Send one message.

        * Over `connection` if it is given and alive, whatever `destination` says
          (RFC 3261 §18.2.2: a response goes back on the connection its request came on).
        * UDP: from the listener socket of the destination's family (or `local`), waiting
          while the socket's send buffer is full. A cancelled caller sends nothing, but a
          datagram the kernel takes at once does not pass through the scheduler.
        * TCP: over a live connection with `destination` if there is one (accepted or
          outbound), else over a new one, opened within ``tcp_connect_timeout`` and then
          read like any other (responses come back on it).

        Args:
            data: the serialized message.
            destination: where to send it.
            connection: the TCP connection to prefer.
            local: the UDP listener to send from.

        Raises:
            TransportError: it cannot be delivered: no listener of that family, an
                unsupported transport, a refused or timed-out connection, a broken one.
        """
        if connection is not None and connection.alive:
            await connection.send(data)
            logger.debug("%s -> %s: %d bytes", connection.local, connection.peer, len(data))
            return
        if self._nursery is None:
            raise TransportError(f"cannot send to {destination}: the transport is not serving")
        if destination.transport == "udp":
            await self._udp.send(data, destination, local)
        elif destination.transport == "tcp":
            tcp = await self._tcp.connection_to(destination)
            await tcp.send(data)
            logger.debug("%s -> %s: %d bytes", tcp.local, tcp.peer, len(data))
        else:
            self._counters.send_errors += 1
            raise TransportError(
                f"cannot send to {destination}: transport {destination.transport} is not supported"
            )
