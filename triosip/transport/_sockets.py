"""Opening sockets: the one place where ``OSError`` becomes `TransportError`.

UDP sockets are stdlib sockets in non-blocking mode: the receive loop drains them with
plain ``recvfrom`` calls until ``BlockingIOError`` and only then waits in trio (see
``UdpTransport.serve``). TCP sockets are trio's (``SocketListener``,
``SocketStream``), which bring ``TCP_NODELAY`` and proper close notification.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from typing import TYPE_CHECKING

import trio

from ._address import Address
from ._errors import TransportError

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

TCP_BACKLOG = 1024
"""listen(2) backlog of a TCP listener."""

# RFC 5626 §4.4.1 keep-alives, on either transport: a double-CRLF "ping" is answered with
# a single-CRLF "pong".
PING = b"\r\n\r\n"
PONG = b"\r\n"

# What a connection attempt fails with when the peer refuses it (RFC 3261 §18.1.1: "a TCP
# reset" or "an ICMP Protocol Not Supported").
_REFUSED = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ENOPROTOOPT})

_WHY = {
    errno.EADDRINUSE: "address already in use",
    errno.EADDRNOTAVAIL: "address not available on this machine",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.EAFNOSUPPORT: "address family not supported (no IPv6 here?)",
}


def describe_os_error(exc: OSError) -> str:
    if exc.errno in _WHY:
        return _WHY[exc.errno]
    if exc.errno:
        # Not exc.strerror: trio's connect puts the address in it.
        return os.strerror(exc.errno).lower()
    return str(exc).lower()


def _new_socket(address: Address, kind: socket.SocketKind) -> socket.socket:
    try:
        sock = socket.socket(address.family, kind)
    except OSError as exc:
        raise TransportError(f"cannot listen on {address}: {describe_os_error(exc)}") from exc
    if address.is_ipv6:
        # One socket per family: an IPv6 listener must not also take IPv4-mapped traffic,
        # whose source would read "::ffff:192.0.2.1".
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def _bound_address(address: Address, sock: socket.socket) -> Address:
    sockname = sock.getsockname()
    return Address(address.transport, sockname[0], sockname[1])


def bind_udp(
    address: Address, *, buffer_bytes: int, reuse_port: bool = False
) -> tuple[socket.socket, Address]:
    """Open a non-blocking UDP socket bound to `address`.

    Args:
        address: where to listen; port 0 picks a free port.
        buffer_bytes: the SO_RCVBUF and SO_SNDBUF to ask for; the kernel caps it at
            net.core.rmem_max / wmem_max, which is logged when it happens.
        reuse_port: share the address with the other worker processes (``SO_REUSEPORT``).

    Returns:
        The socket and the address it is bound to.

    Raises:
        TransportError: the socket could not be opened or bound.
    """
    sock = _new_socket(address, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option, name in ((socket.SO_RCVBUF, "receive"), (socket.SO_SNDBUF, "send")):
            sock.setsockopt(socket.SOL_SOCKET, option, buffer_bytes)
            # Linux reports twice what it grants (socket(7)).
            granted = sock.getsockopt(socket.SOL_SOCKET, option) // 2
            if granted < buffer_bytes:
                logger.warning(
                    "%s: the kernel gave a %s buffer of %d bytes, not %d: raise "
                    "net.core.%s to absorb bursts",
                    address,
                    name,
                    granted,
                    buffer_bytes,
                    "rmem_max" if name == "receive" else "wmem_max",
                )
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        raise TransportError(f"cannot listen on {address}: {describe_os_error(exc)}") from exc
    return sock, _bound_address(address, sock)


def bind_tcp(address: Address, *, reuse_port: bool = False) -> tuple[trio.SocketListener, Address]:
    """Open a TCP listener bound to `address`.

    Args:
        address: where to listen; port 0 picks a free port.
        reuse_port: share the address with the other worker processes (``SO_REUSEPORT``:
            the kernel spreads new connections over their listeners).

    Returns:
        The listener and the address it is bound to.

    Raises:
        TransportError: the socket could not be opened, bound or put to listen.
    """
    sock = _new_socket(address, socket.SOCK_STREAM)
    try:
        # As trio.open_tcp_listeners: restart at once while old connections sit in
        # TIME_WAIT. On Linux this does not let two listeners share a port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address.host, address.port))
        sock.listen(TCP_BACKLOG)
    except OSError as exc:
        sock.close()
        raise TransportError(f"cannot listen on {address}: {describe_os_error(exc)}") from exc
    bound = _bound_address(address, sock)
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock)), bound


def check_free(addresses: Sequence[Address]) -> None:
    """Bind each address (with a fixed port) alone for a moment, and close it again.

    Worker processes bind with ``SO_REUSEPORT``, which lets any other process of the same
    user that asks for it share their address: a second ``triosip run --workers N`` on the
    same port would silently take half the traffic. Their supervisor checks first that no
    one holds the addresses.

    Raises:
        TransportError: an address is in use (or cannot be bound).
    """
    for address in addresses:
        if address.port == 0:
            continue
        if address.transport == "udp":
            sock, _ = bind_udp(address, buffer_bytes=0)
            sock.close()
        else:
            listener, _ = bind_tcp(address)
            listener.socket.close()


async def connect_tcp(destination: Address) -> trio.SocketStream:
    """Open a TCP connection to `destination`. The caller bounds the time it may take.

    Raises:
        TransportError: the connection was refused or failed.
    """
    try:
        sock = trio.socket.socket(destination.family, socket.SOCK_STREAM)
    except OSError as exc:
        raise TransportError(f"cannot connect to {destination}: {describe_os_error(exc)}") from exc
    connected = False
    try:
        await sock.connect((destination.host, destination.port))
        connected = True
    except OSError as exc:
        raise TransportError(
            f"cannot connect to {destination}: {describe_os_error(exc)}",
            refused=exc.errno in _REFUSED,
        ) from exc
    finally:
        if not connected:
            sock.close()
    return trio.SocketStream(sock)
