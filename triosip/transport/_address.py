"""Transport addresses, ``--listen`` specs, and where a response goes (RFC 3261 §18.2.2).

An `Address` holds an IP literal, never a name: names are resolved above this layer
(RFC 3263), so that nothing here blocks on DNS. IPv6 hosts are kept without brackets,
in the canonical form the kernel reports (``::1``), so that an address built from a
``recvfrom`` compares equal to one parsed from a spec or a Via.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Mapping

    from triosip.sip import Via

TRANSPORTS = ("udp", "tcp")
"""The transports this layer speaks."""

# RFC 3261 §19.1.2: 5060 for UDP, TCP and SCTP, 5061 for TLS; RFC 7118 §5 puts WS and WSS
# on the HTTP ports.
DEFAULT_PORTS: Mapping[str, int] = MappingProxyType(
    {"udp": 5060, "tcp": 5060, "sctp": 5060, "tls": 5061, "ws": 80, "wss": 443}
)

_UNRELIABLE = frozenset({"udp"})


@dataclass(frozen=True, slots=True)
class Address:
    """A transport address: transport, IP literal and port.

    Attributes:
        transport: ``"udp"`` or ``"tcp"`` (lower case).
        host: an IP literal; IPv6 without brackets (``"::1"``).
        port: the port number.
    """

    transport: str
    host: str
    port: int

    @property
    def is_ipv6(self) -> bool:
        """Whether the host is an IPv6 address."""
        return ":" in self.host

    @property
    def family(self) -> socket.AddressFamily:
        """``AF_INET6`` for an IPv6 host, else ``AF_INET``."""
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @property
    def host_for_uri(self) -> str:
        """The host as written in a URI or a Via: ``"[::1]"`` for IPv6, ``"127.0.0.1"`` else."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def host_port(self) -> str:
        """``"127.0.0.1:5060"`` or ``"[::1]:5060"``: the sent-by of a Via, say."""
        return f"{self.host_for_uri}:{self.port}"

    @property
    def reliable(self) -> bool:
        """Whether the transport is reliable (everything but UDP, RFC 3261 §18)."""
        return self.transport not in _UNRELIABLE

    def __str__(self) -> str:
        return f"{self.transport}:{self.host_for_uri}:{self.port}"


ListenSpec: TypeAlias = Address
"""What ``--listen`` gives: the address of one listener (port 0 picks a free one)."""


def parse_listen_spec(text: str) -> Address:
    """Parse ``transport:host[:port]``, the form of ``--listen``.

    ``udp:127.0.0.1:5060``, ``tcp:[::1]:5070`` and ``udp:127.0.0.1`` (port 5060) are
    accepted; the transport is case-insensitive; the host must be an IP literal, in
    brackets when it is IPv6; port 0 asks the kernel for a free port.

    Args:
        text: the spec.

    Returns:
        The address to listen on, its host in canonical form.

    Raises:
        ValueError: one line saying what to fix, for the CLI to print.
    """
    example = "expected transport:host[:port], e.g. udp:127.0.0.1:5060 or tcp:[::1]:5060"
    transport, colon, rest = text.strip().partition(":")
    if not colon or not transport.isalpha() or not rest:
        raise ValueError(example)
    transport = transport.lower()
    if transport not in TRANSPORTS:
        raise ValueError(f"unsupported transport {transport!r}: use udp or tcp")
    port_text: str | None
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket:
            raise ValueError(f"missing ']' after the IPv6 address {host!r}")
        if after and not after.startswith(":"):
            raise ValueError(f"unexpected {after!r} after [{host}]: {example}")
        port_text = after[1:] if after else None
        if _canonical_ip(host, version=6) is None:
            raise ValueError(f"[{host}] is not an IPv6 address")
    else:
        if rest.count(":") > 1:
            raise ValueError(f"put an IPv6 address in brackets, e.g. {transport}:[::1]:5060")
        host, colon, port_text_or_empty = rest.partition(":")
        port_text = port_text_or_empty if colon else None
        if _canonical_ip(host, version=4) is None:
            raise ValueError(
                f"{host!r} is not an IP address: listen on an IP literal such as 127.0.0.1 or [::1]"
            )
    canonical = _canonical_ip(host)
    assert canonical is not None  # checked above
    if port_text is None:
        return Address(transport, canonical, DEFAULT_PORTS[transport])
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return Address(transport, canonical, port)


def response_destination(
    via: Via, inbound_source: Address, *, reply_to_via: bool = False
) -> Address:
    """Where the response to a request goes (RFC 3261 §18.2.1, §18.2.2; RFC 3581 §4).

    By default, where the request came from, as Kamailio does (its ``reply_to_via=0``):
    the client wrote its Via, so nothing in it may send our responses elsewhere. A
    ``received`` written by the client would make the proxy a reflector with no spoofing
    needed (§18.2.1 has the *server* add it), and so would a ``maddr``:

    * the transport and address family the request arrived on, whatever the Via names
      (a Via naming TLS or SCTP, or an IPv6 sent-by, over UDP/IPv4 is answered over
      UDP/IPv4);
    * the source IP;
    * with ``rport`` (RFC 3581 §4): the source port, whatever value the client put there;
    * otherwise the sent-by port, or the default port of the Via's transport (5060, 5061
      for TLS), as §18.2.2 says.

    Over a reliable transport the response goes back on the connection the request came
    on: the caller passes ``inbound.connection`` to `TransportLayer.send`, which prefers
    it; this address (source IP, sent-by port) only serves if that connection has closed.

    With `reply_to_via` (``triosip run --reply-to-via``: unsafe on the open internet) the
    Via is obeyed as §18.2.2 reads it: ``maddr`` first, then ``received``, then the source
    IP, and the ``rport`` value when there is one. Only an IP literal of the source's
    address family is taken from the Via (a name would need DNS, RFC 3263, above us); the
    transport is still the one the request came on, and no multicast TTL is applied.

    Args:
        via: the top Via of the request.
        inbound_source: where the request came from.
        reply_to_via: obey the Via's maddr, received and rport values (see above).

    Returns:
        The destination, in the transport of `inbound_source`.
    """
    transport = inbound_source.transport
    host = inbound_source.host
    # §18.2.2: "the port indicated in the "sent-by" value, or [...] 5060 if none is
    # specified explicitly" (5061 for TLS, §19.1.2).
    port = via.port or DEFAULT_PORTS.get(via.transport.lower(), 5060)
    if reply_to_via:
        maddr = _ip_of_family(via.maddr, inbound_source)
        if maddr is not None:
            # §18.2.2: "the response MUST be forwarded to the address listed there, using
            # the port indicated in "sent-by", or port 5060 if none is present".
            return Address(transport, maddr, via.port or 5060)
        host = _ip_of_family(via.received, inbound_source) or host
        if via.has_rport and transport in _UNRELIABLE:
            return Address(transport, host, _port_or_none(via.rport) or inbound_source.port)
        return Address(transport, host, port)
    if via.has_rport and transport in _UNRELIABLE:
        # RFC 3581 §4: "the response MUST be sent to the IP address listed in the
        # "received" parameter, and the port in the "rport" parameter" - both of which
        # the server fills with the source of the request.
        return Address(transport, host, inbound_source.port)
    return Address(transport, host, port)


def _ip_of_family(text: str | None, like: Address) -> str | None:
    """`text` as a canonical IP literal if it is one of `like`'s address family."""
    if not text:
        return None
    ip = _canonical_ip(text)
    if ip is None or (":" in ip) != like.is_ipv6:
        return None
    return ip


def _canonical_ip(text: str, *, version: int | None = None) -> str | None:
    """The canonical form of an IP literal (brackets dropped), or None if it is not one."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if version is not None and ip.version != version:
        return None
    return str(ip)


def _port_or_none(text: str | None) -> int | None:
    if text and text.isascii() and text.isdigit():
        port = int(text)
        if 0 < port <= 65535:
            return port
    return None
