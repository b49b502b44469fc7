"""SIP over UDP: the receive loop of each socket, and sending (RFC 3261 §18.1.1, §18.2.1).

Each socket is a non-blocking stdlib socket. Its task drains it with plain ``recvfrom``
calls until ``BlockingIOError`` and only then waits for it to become readable (measured
~1.5x faster than awaiting each datagram, with no drops in a burst). After ``UDP_BATCH``
datagrams in a row it passes through the scheduler once, so a flood does not starve the
other tasks. Each datagram is parsed and handed to ``on_message`` synchronously: the loop
never waits for a consumer. Sends use the listener's own socket, so the
source port is the listener's port, which peers and NATs rely on (RFC 3581).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import trio

from triosip.sip import ParseError, check_message, parse_message

from ._address import Address
from ._errors import TransportError
from ._handoff import HANDOFF_PACKET_SIZE, HEADS_KEPT, decode_head, split_handoffs
from ._sockets import PING, PONG, describe_os_error
from .base import Inbound

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from ._handoff import HandOff
    from ._limits import TransportLimits
    from ._statistics import Counters

logger = logging.getLogger(__name__)

UDP_BATCH = 64
"""Datagrams read in a row before passing through the scheduler once."""

UDP_RECEIVE_SIZE = 65535
"""The ``recvfrom`` buffer: larger than any UDP payload, so nothing is truncated."""

_CR_LF = frozenset(b"\r\n")

PEER_CACHE_SIZE = 4096
"""Source addresses a receive loop keeps as `Address` values, to build none per datagram
(a frozen dataclass costs ~0.6 µs to make); emptied when full, so a flood from many
ports costs no more memory than this."""


class UdpTransport:
    """The UDP sockets of a `TransportLayer`: their receive loops and sends.

    Made by the layer, which binds the sockets and runs `serve` for each in its nursery.
    """

    def __init__(
        self,
        *,
        on_message: Callable[[Inbound], None],
        on_parse_error: Callable[[ParseError, bytes, Address, Address], None],
        limits: TransportLimits,
        counters: Counters,
    ) -> None:
        self._on_message = on_message
        self._on_parse_error = on_parse_error
        self._limits = limits
        self._reply_to_via = limits.reply_to_via
        self._counters = counters
        self._by_local: dict[Address, socket.socket] = {}
        # [is_ipv6] -> the first listener of that family: a list indexed by a bool, so
        # that a send finds it with no call.
        self._by_family: list[socket.socket | None] = [None, None]
        self._write_locks: dict[socket.socket, trio.Lock] = {}
        # The listener a response was last sent from, compared by identity: the `local`
        # every response of a transaction names is the very Address its receive loop
        # handed up, so the usual send finds its socket with no dict lookup (hashing an
        # Address is a Python call).
        self._last_local: Address | None = None
        self._last_sock: socket.socket | None = None
        # Whether this module logs at DEBUG: read once per batch by the receive loops,
        # rather than twice per datagram received and sent (`_refresh_debug`).
        self._debug = logger.isEnabledFor(logging.DEBUG)

    def add(self, sock: socket.socket, local: Address, *, family_default: bool = True) -> None:
        """Send from ``sock`` when asked to send from ``local``, or (`family_default`, the
        first socket added so) from its family."""
        self._by_local[local] = sock
        if family_default and self._by_family[local.is_ipv6] is None:
            self._by_family[local.is_ipv6] = sock
        self._write_locks[sock] = trio.Lock()

    def clear(self) -> None:
        """Forget every socket (the layer closes them)."""
        self._by_local.clear()
        self._by_family = [None, None]
        self._write_locks.clear()
        self._last_local = self._last_sock = None

    def _refresh_debug(self) -> None:
        # A level changed meanwhile (logging has no hook for it) shows from the next batch.
        self._debug = logger.isEnabledFor(logging.DEBUG)

    # --- sending -----------------------------------------------------------------------

    def send_nowait(self, data: bytes, destination: Address, local: Address | None) -> bool:
        """`TransportLayer.send_nowait` for a UDP destination."""
        # The hot path of every message sent: `_socket` inlined, the listener found by
        # identity first (the sendto itself, ~5 µs of kernel time on loopback, is most of
        # the cost).
        if local is None:
            sock = self._by_family[":" in destination.host]
        elif local is self._last_local:
            sock = self._last_sock
        else:
            sock = self._by_local.get(local)
            if sock is not None:
                self._last_local, self._last_sock = local, sock
            else:
                sock = self._by_family[":" in destination.host]
        if sock is None:
            return False
        try:
            sock.sendto(data, (destination.host, destination.port))
        except BlockingIOError:
            self._counters.udp_send_would_block += 1
            return False
        except OSError:
            return False
        counters = self._counters
        counters.udp_datagrams_sent += 1
        counters.udp_bytes_sent += len(data)
        if self._debug:
            logger.debug("udp -> %s: %d bytes", destination, len(data))
        return True

    def _socket(self, destination: Address, local: Address | None) -> socket.socket | None:
        if local is not None:
            sock = self._by_local.get(local)
            if sock is not None:
                return sock
        return self._by_family[":" in destination.host]

    async def send(self, data: bytes, destination: Address, local: Address | None) -> None:
        """`TransportLayer.send` for a UDP destination.

        Raises:
            TransportError: no listener of the destination's family, or the send failed.
        """
        sock = self._socket(destination, local)
        if sock is None:
            self._counters.send_errors += 1
            family = "IPv6" if destination.is_ipv6 else "IPv4"
            raise TransportError(f"cannot send to {destination}: no {family} UDP listener")
        # A cancelled caller sends nothing. But a datagram the kernel takes at once costs
        # no trip through the scheduler (~9 µs): like
        # send_nowait, a UDP send never blocks, so only a full buffer makes this wait.
        await trio.lowlevel.checkpoint_if_cancelled()
        address = (destination.host, destination.port)
        while True:
            try:
                sock.sendto(data, address)
            except BlockingIOError:
                # trio lets one task at a time wait for a socket to be writable.
                async with self._write_locks[sock]:
                    await trio.lowlevel.wait_writable(sock)
                continue
            except OSError as exc:
                self._counters.send_errors += 1
                raise TransportError(
                    f"cannot send to {destination}: {describe_os_error(exc)}"
                ) from exc
            break
        counters = self._counters
        counters.udp_datagrams_sent += 1
        counters.udp_bytes_sent += len(data)
        logger.debug("udp -> %s: %d bytes", destination, len(data))

    # --- receiving ---------------------------------------------------------------------

    async def serve(
        self,
        sock: socket.socket,
        local: Address,
        hand_off: HandOff | None = None,
    ) -> None:
        """Receive on ``sock`` until cancelled: the task ``receive udp:<local>``.

        Args:
            sock: the socket.
            local: the address it is bound to.
            hand_off: for a listener shared by worker processes, called first with each
                datagram; True means another worker handles it (``_handoff.py``). A
                batch's hand-offs are sent before its own messages are handled.
        """
        if hand_off is not None:
            await self._serve_shared(sock, local, hand_off)
            return
        recvfrom = sock.recvfrom
        receive = self._receive_datagram
        debug_enabled, debug = logger.isEnabledFor, logging.DEBUG  # see _refresh_debug
        sources: dict[tuple[str, int], Address] = {}  # see PEER_CACHE_SIZE
        wait_readable, fd = trio.lowlevel.wait_readable, sock.fileno()
        while True:
            self._debug = debug_enabled(debug)
            for _ in range(UDP_BATCH):
                try:
                    data, peer = recvfrom(UDP_RECEIVE_SIZE)
                except BlockingIOError:
                    break
                except (ConnectionRefusedError, ConnectionResetError):
                    # An ICMP error for an earlier send, reported by some kernels: it is
                    # not this loop's business (and the send that caused it has returned).
                    continue
                try:
                    source = sources[peer]
                except KeyError:  # rare: a new peer (a subscript, not a get() call)
                    source = _remember(sources, peer)
                receive(sock, data, source, local)
            else:
                # A full batch: let the other tasks run, then drain on.
                await trio.lowlevel.checkpoint()
                continue
            await wait_readable(fd)

    async def _serve_shared(self, sock: socket.socket, local: Address, hand_off: HandOff) -> None:
        # `serve` for a worker: read the batch first and hand the other workers' messages
        # over at once, then handle this worker's own, so that the owners work on theirs
        # meanwhile (on another core) rather than after this batch.
        recvfrom = sock.recvfrom
        receive = self._receive_datagram
        sources: dict[tuple[str, int], Address] = {}  # see PEER_CACHE_SIZE
        wait_readable, fd = trio.lowlevel.wait_readable, sock.fileno()
        mine: list[tuple[bytes, tuple[str, int]]] = []
        while True:
            self._refresh_debug()
            for _ in range(UDP_BATCH):
                try:
                    data, peer = recvfrom(UDP_RECEIVE_SIZE)
                except BlockingIOError:
                    full = False
                    break
                except (ConnectionRefusedError, ConnectionResetError):
                    continue  # as in `serve`
                if not hand_off(data, peer, local):
                    mine.append((data, peer))
            else:
                full = True
            hand_off.flush()
            for data, peer in mine:
                receive(sock, data, sources.get(peer) or _remember(sources, peer), local)
            mine.clear()
            if full:
                await trio.lowlevel.checkpoint()
            else:
                await wait_readable(fd)

    async def serve_handoffs(self, inbox: socket.socket) -> None:
        """Receive the requests other workers hand over (``_handoff.py``) until cancelled,
        and handle each as if it came to this worker's socket on its listener."""
        recv = inbox.recv
        receive = self._receive_datagram
        wait_readable, fd = trio.lowlevel.wait_readable, inbox.fileno()
        heads: dict[bytes, tuple[Address, Address, socket.socket] | None] = {}
        while True:
            self._refresh_debug()
            for _ in range(UDP_BATCH):
                try:
                    packet = recv(HANDOFF_PACKET_SIZE)
                except BlockingIOError:
                    break
                records = split_handoffs(packet)
                if records is None:
                    # Only the workers write there: a bug.
                    logger.warning("a hand-off that is no sequence of records: dropped")
                    continue
                for head, data in records:
                    if head in heads:
                        handed = heads[head]
                    else:
                        if len(heads) >= HEADS_KEPT:
                            heads.clear()
                        handed = heads[head] = self._handed_from(head)
                    if handed is None:
                        # Only the workers write there, with the same listeners: a bug.
                        logger.warning("a hand-off that names no listener of ours: dropped")
                        continue
                    self._counters.udp_handed_in += 1
                    source, local, sock = handed
                    receive(sock, data, source, local)
            else:
                await trio.lowlevel.checkpoint()
                continue
            await wait_readable(fd)

    def _handed_from(self, head: bytes) -> tuple[Address, Address, socket.socket] | None:
        addresses = decode_head(head)
        sock = None if addresses is None else self._by_local.get(addresses[1])
        return None if addresses is None or sock is None else (*addresses, sock)

    def _receive_datagram(
        self, sock: socket.socket, data: bytes, source: Address, local: Address
    ) -> None:
        counters = self._counters
        counters.udp_datagrams_received += 1
        size = len(data)
        counters.udp_bytes_received += size
        if not size or (data[0] in _CR_LF and not data.strip(b"\r\n")):
            # RFC 5626 §4.4.1: CRLF keep-alives carry no message. A double-CRLF "ping"
            # gets a single-CRLF "pong"; some UAs send them over UDP as well.
            counters.keepalives_received += 1
            if data == PING:
                # Best effort: a full buffer drops the pong, as it would any datagram.
                with contextlib.suppress(OSError):
                    sock.sendto(PONG, (source.host, source.port))
            return
        try:
            message = parse_message(data, max_size=self._limits.max_message_size)
            check_message(message)  # nothing the proxy reads later may raise
        except ParseError as exc:
            counters.parse_errors += 1
            logger.debug("%s <- %s: bad message: %s", local, source, exc)
            self._on_parse_error(exc, data, source, local)
            return
        if self._debug:
            logger.debug("%s <- %s: %d bytes", local, source, size)
        self._on_message(Inbound(message, source, local, None, self._reply_to_via))


def _remember(sources: dict[tuple[str, int], Address], peer: tuple[str, int]) -> Address:
    """The `Address` of `peer`, kept in `sources` (see `PEER_CACHE_SIZE`)."""
    if len(sources) >= PEER_CACHE_SIZE:
        sources.clear()
    # An IPv6 peer is (host, port, flowinfo, scope_id): the key is all four, the Address
    # host and port.
    address = sources[peer] = Address("udp", peer[0], peer[1])
    return address
