"""The names of this proxy: what its Via and Record-Route say, and what is "myself".

A listener bound to an address names that address. Two cases need more:

* A wildcard listener (``0.0.0.0``, ``::``) is reached at every address of the machine, and
  no peer can send to ``0.0.0.0``. Its Via and Record-Route name the address the kernel
  sends from toward the destination (a UDP socket ``connect()``ed there, which sends
  nothing, then ``getsockname()``), cached per destination; and any local address with
  its port is "myself" (a UDP socket can ``bind()`` only a local address), cached too.
* Behind NAT, or under a DNS name, the operator says the name (``--advertise
  HOST[:PORT]``, Kamailio's ``advertise``, OpenSIPS's ``as``): Via and Record-Route say
  it instead, and it is "myself" as well. Other names the proxy is reached at are
  ``--alias HOST[:PORT]`` (Kamailio's ``alias``; without a port, every listener's port).

The caches hold at most `CACHE_SIZE` hosts, then start over: a peer sending Route or
Request-URI hosts at random costs one ``bind()`` per new host, never unbounded memory.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING

from triosip.transport._address import Address

if TYPE_CHECKING:
    from collections.abc import Container, Iterable, Mapping

__all__ = ["LocalNames", "parse_host_port"]

CACHE_SIZE = 4096
_WILDCARDS = frozenset({"0.0.0.0", "::"})
# RFC 3261 §25.1 hostname, loosely: labels of letters, digits and hyphens.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


def parse_host_port(text: str) -> tuple[str, int | None]:
    """Parse ``HOST[:PORT]`` as ``--advertise`` and ``--alias`` take it.

    The host is a DNS name or an IP literal (IPv6 in brackets when a port follows).

    Returns:
        The host, lower case and without brackets, and the port or None.

    Raises:
        ValueError: one line saying what to fix.
    """
    text = text.strip()
    port_text: str | None = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: write [IPv6] or [IPv6]:PORT")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        host = text  # a bare IPv6 address, no port
    else:
        host, colon, after = text.partition(":")
        port_text = after if colon else None
    host = host.lower()
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if not host or not set(host) <= _NAME_CHARS or host.startswith(("-", ".")):
            raise ValueError(f"{text!r}: {host!r} is not a host name or IP address") from None
    if port_text is None:
        return host, None
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ValueError(f"{text!r}: the port must be a number 1-65535")
    return host, int(port_text)


class LocalNames:
    """Which ``(host, port)`` pairs are this proxy, and what to call a listener.

    ``(host, port) in names`` is Kamailio's ``myself``: `host` as `normalise_host` gives
    it (lower case, no brackets).

    Args:
        listeners: the bound listeners.
        advertise: for some of `listeners`, the host and port (None: the listener's) that
            Via and Record-Route name instead.
        aliases: other names of this proxy, with a port, or None for every listener's.
    """

    def __init__(
        self,
        listeners: Iterable[Address],
        advertise: Mapping[Address, tuple[str, int | None]],
        aliases: Iterable[tuple[str, int | None]] = (),
    ) -> None:
        listeners = tuple(listeners)
        self._advertised: dict[Address, Address] = {}
        self._wildcard_advertised: dict[tuple[str, int, bool], Address] = {}
        self._exact: set[tuple[str, int]] = set()
        # Ports of wildcard listeners, by whether they are IPv6.
        self._wildcard_ports: dict[bool, set[int]] = {False: set(), True: set()}
        ports = set()
        for listener in listeners:
            ports.add(listener.port)
            if listener.host in _WILDCARDS:
                self._wildcard_ports[listener.is_ipv6].add(listener.port)
            else:
                self._exact.add((listener.host, listener.port))
            name = advertise.get(listener)
            if name is not None:
                named = Address(listener.transport, name[0], name[1] or listener.port)
                self._advertised[listener] = named
                if listener.host in _WILDCARDS:
                    # A TCP connection it accepted names its real local address.
                    key = (listener.transport, listener.port, listener.is_ipv6)
                    self._wildcard_advertised[key] = named
                self._exact.add((named.host, named.port))
                ports.add(named.port)
        for alias, alias_port in aliases:
            self._exact.update((alias, p) for p in ((alias_port,) if alias_port else ports))
        self._local: dict[str, bool] = {}
        self._source: dict[tuple[str, Address], Address] = {}

    @property
    def myself(self) -> Container[tuple[str, int]]:
        """What to test ``(host, port) in``: this object, or with no wildcard listener
        the plain set of names (a set's lookup costs a third of this class's)."""
        if self._wildcard_ports[False] or self._wildcard_ports[True]:
            return self
        return frozenset(self._exact)

    def __contains__(self, item: object) -> bool:
        if item in self._exact:
            return True
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        host, port = item
        if not isinstance(host, str):
            return False
        if port not in self._wildcard_ports[":" in host]:
            return False
        local = self._local.get(host)
        if local is None:
            if len(self._local) >= CACHE_SIZE:
                self._local.clear()
            local = self._local[host] = _is_local_ip(host)
        return local

    def advertised(self, local: Address, toward: str) -> Address:
        """What Via and Record-Route name for `local`, a listener sending toward `toward`.

        Args:
            local: the listener (or a connection's local address).
            toward: the IP literal of the peer.

        Returns:
            The advertised name (its host may be a DNS name), else for a wildcard listener
            its port on the address the kernel sends from toward `toward`, else `local`.
        """
        name = self._advertised.get(local)
        if name is not None:
            return name
        if self._wildcard_advertised:
            name = self._wildcard_advertised.get((local.transport, local.port, local.is_ipv6))
            if name is not None:
                return name
        if local.host not in _WILDCARDS:
            return local
        key = (toward, local)
        named = self._source.get(key)
        if named is None:
            if len(self._source) >= CACHE_SIZE:
                self._source.clear()
            source = _source_toward(toward, local.family)
            named = self._source[key] = Address(local.transport, source, local.port)
        return named


def _is_local_ip(host: str) -> bool:
    """Whether `host` is an IP address of this machine: one a socket can bind."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if ip.is_unspecified or ip.is_multicast:
        return False
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(ip), 0))
        except OSError:
            return False
    return True


def _source_toward(host: str, family: socket.AddressFamily) -> str:
    """The address the kernel would send from toward `host` (a connected UDP socket sends
    nothing); the loopback address when there is no route."""
    loopback = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
            source: str = probe.getsockname()[0]
    except OSError:
        return loopback
    return source.split("%", 1)[0]
