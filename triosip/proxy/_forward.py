"""Building the requests a proxy sends on (RFC 3261 §16.6) and finding where they go.

Everything here is a pure function of its arguments, so that the forwarding rules can be
tested with messages alone; `_transaction.py` calls them and does the sending.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import itertools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from triosip.sip import MAGIC_COOKIE, URI, ParseError, Request, Via
from triosip.transport import Address

if TYPE_CHECKING:
    from collections.abc import Container

# RFC 3261 §16.6 step 3: a proxy adds Max-Forwards: 70 to a request that lacks one.
DEFAULT_MAX_FORWARDS = 70
# Our branches read "z9hG4bK-ts<loop hash>.<random>": the loop hash lets us detect loops
# as RFC 3261 §16.3 step 4 describes, the random part keeps every branch unique.
BRANCH_PREFIX = MAGIC_COOKIE + "-ts"
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


class RoutingError(Exception):
    """The request cannot be forwarded: no usable next hop (the proxy answers `status`)."""

    def __init__(self, reason: str, *, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NextHop:
    """Where a request goes, before DNS: the URI's host (a name or an IP literal)."""

    transport: str
    host: str
    port: int


def loop_hash(request: Request, received_via: Via) -> str:
    """The part of our branch that is the same each time this request comes through.

    RFC 3261 §16.6 step 8 / §16.3 step 4: a hash over the fields that a spiral changes
    (Request-URI, Route) and those that identify the request (tags, Call-ID, CSeq number,
    and `received_via`, the top Via the proxy received it with). A request that comes back
    with the same hash in a Via of ours has looped rather than spiralled. The RFC hashes
    "the topmost Via received", but on the way back that is someone else's Via: the one to
    compare against is the Via just below ours, which was topmost when we saw it first.
    """
    top = received_via
    parts = (
        request.uri_raw,
        request.from_.tag or "",
        request.to.tag or "",
        request.call_id,
        str(request.cseq.number),
        f"{top.host}:{top.port}:{top.branch}",
        ",".join(request.header_lines("route")),
        ",".join(request.header_lines("proxy-require")),
    )
    return hashlib.blake2b(
        "\x00".join(parts).encode("utf-8", "surrogateescape"), digest_size=5
    ).hexdigest()


def has_looped(request: Request, ours: Container[tuple[str, int]]) -> bool:
    """Whether a Via of ours carries the loop hash this request has now (RFC 3261 §16.3 step 4)."""
    vias = request.via
    for via, received_via in itertools.pairwise(vias):
        branch = via.branch or ""
        if not branch.startswith(BRANCH_PREFIX):
            continue
        if (normalise_host(via.host), via.port or 5060) not in ours:
            continue
        if branch[len(BRANCH_PREFIX) :].split(".", 1)[0] == loop_hash(request, received_via):
            return True
    return False


def normalise_host(host: str) -> str:
    """An IP literal as `Address.host` spells it: no IPv6 brackets, lower case."""
    return host[1:-1].lower() if host.startswith("[") else host.lower()


# Hosts up to this long have their answer cached (an IPv6 address with brackets and a
# zone fits); a longer one, which a peer can send, is parsed each time and not kept.
_IP_LITERAL_CACHED_MAX = 64


def is_ip_literal(host: str) -> bool:
    """Whether `host` is an IPv4 or IPv6 address (brackets allowed), not a name."""
    if len(host) <= _IP_LITERAL_CACHED_MAX:
        return _is_ip_literal(host)
    return _is_ip_literal.__wrapped__(host)


@functools.lru_cache(maxsize=1024)
def _is_ip_literal(host: str) -> bool:
    # Cached: the same few next hops are asked about on every request, and the parse
    # costs ~10 µs; hostile hosts only churn the bounded cache.
    try:
        ipaddress.ip_address(normalise_host(host))
    except ValueError:
        return False
    return True


def next_hop_of(uri: URI, *, default_transport: str = "udp") -> NextHop:
    """Where a URI points (RFC 3263 §4 without DNS): its transport, host and port.

    Raises:
        RoutingError: the URI has no host we can send to (a tel: URI, an unknown scheme,
            a transport we don't speak).
    """
    if default_transport == "udp" and len(uri.text) <= _NEXT_HOP_CACHED_MAX:
        return _next_hop_of_udp(uri)
    return _next_hop_of(uri, default_transport)


# URIs up to this long have their next hop remembered: the Request-URIs and Route entries
# of a dialog (and the proxy's own) are asked about on every request; a RoutingError is
# raised each time, never remembered. A longer URI, which a peer can send, is not kept.
_NEXT_HOP_CACHED_MAX = 256


@functools.lru_cache(maxsize=1024)
def _next_hop_of_udp(uri: URI) -> NextHop:
    return _next_hop_of(uri, "udp")


def _next_hop_of(uri: URI, default_transport: str) -> NextHop:
    if uri.scheme not in ("sip", "sips") or not uri.host:
        raise RoutingError(f"Cannot route to a {uri.scheme}: URI", status=416)
    if uri.scheme == "sips":
        raise RoutingError("sips: needs TLS, which this proxy does not offer", status=416)
    maddr = uri.params.get("maddr")
    host = maddr if maddr else uri.host
    transport = (uri.transport or default_transport).lower()
    if transport not in ("udp", "tcp"):
        raise RoutingError(f"Unsupported transport {transport}", status=503)
    return NextHop(transport, normalise_host(host), uri.port or DEFAULT_PORTS[transport])


# RFC 3261 §25.1 hostname: dot-separated labels of letters, digits and inner hyphens.
_HOSTNAME = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?"
)


def parse_destination(text: str) -> NextHop:
    """A destination as scripts and ``--define`` write it.

    Accepts ``udp:127.0.0.1:5080``, ``tcp:[::1]:5080``, ``127.0.0.1:5080``, ``host``, or a
    SIP URI (``sip:proxy.example.com:5060;transport=tcp``).

    Raises:
        RoutingError: the text is none of these.
    """
    # Cached: a routes file names the same few destinations on every call; a text longer
    # than any real destination (from a header, say) is parsed each time, not kept.
    if len(text) <= _DESTINATION_CACHED_MAX:
        return _parse_destination(text)
    return _parse_destination.__wrapped__(text)


_DESTINATION_CACHED_MAX = 256


@functools.lru_cache(maxsize=256)
def _parse_destination(text: str) -> NextHop:
    text = text.strip()
    if text.startswith(("sip:", "sips:")):
        try:
            return next_hop_of(URI.parse(text))
        except ParseError as exc:
            raise RoutingError(f"Bad destination {text!r}: {exc.reason}") from None
    transport = "udp"
    head, sep, rest = text.partition(":")
    if sep and head.lower() in ("udp", "tcp"):
        transport, text = head.lower(), rest
    elif sep and head.isalpha() and rest and not rest.isdigit():
        # "tls:host:5061", "tel:+1555...": a scheme or transport, not "host:port".
        raise RoutingError(
            f"Bad destination {text!r}: unknown transport {head!r} (use udp:, tcp: or sip:)"
        )
    host, port = _split_host_port(text)
    if not host:
        raise RoutingError(f"Bad destination {text!r}: no host")
    if not is_ip_literal(normalise_host(host)) and not _HOSTNAME.fullmatch(host):
        raise RoutingError(f"Bad destination {text!r}: {host!r} is not a host name or address")
    return NextHop(transport, normalise_host(host), port or DEFAULT_PORTS[transport])


def _split_host_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise RoutingError(f"Bad destination {text!r}: unclosed [")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise RoutingError(f"Bad destination {text!r}")
        port_text = rest[1:]
    else:
        host, _, port_text = text.partition(":")
        rest = text[len(host) :]
    if not rest:
        return host, None
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise RoutingError(f"Bad destination port {port_text!r}")
    return host, int(port_text)


def via_value(local: Address, branch: str) -> str:
    """Our Via for a request sent from `local` (RFC 3261 §16.6 step 8): give it the
    listener's advertised name (`TransportLayer.advertised`)."""
    return f"SIP/2.0/{local.transport.upper()} {local.host_for_uri}:{local.port};branch={branch}"


def record_route_value(local: Address) -> str:
    """A loose-routing Record-Route entry naming `local` (RFC 3261 §16.6 step 4)."""
    transport = ";transport=tcp" if local.transport == "tcp" else ""
    return f"<sip:{local.host_for_uri}:{local.port}{transport};lr>"


def is_ours(uri: URI, ours: Container[tuple[str, int]]) -> bool:
    """Whether a Route / Request-URI names one of our listeners."""
    if uri.scheme not in ("sip", "sips") or not uri.host:
        return False
    return (normalise_host(uri.host), uri.port or 5060) in ours


def strip_own_routes(request: Request, ours: Container[tuple[str, int]]) -> tuple[Request, bool]:
    """Remove the Route entries that name us from the top (RFC 3261 §16.4).

    With double record-routing (in and out on different listeners) we meet two of our
    entries in a row, so every leading one of ours goes.

    Returns:
        The request without them, and whether it had any Route at all.
    """
    routes = request.route
    if not routes:
        return request, False
    for entry in routes:
        if not is_ours(entry.uri, ours):
            break
        request = request.without_first_value("route")
    return request, True


def prepare_forward(
    request: Request,
    *,
    record_route: tuple[str, ...] = (),
) -> Request:
    """The request to send on, before its Via (RFC 3261 §16.6 steps 1–6).

    Decrements Max-Forwards (adding 70 when absent) and adds our Record-Route entries
    (`record_route`, top first). When the next Route is a strict router (no ``lr``), the
    Request-URI goes to the end of the Route set and the router's URI becomes the
    Request-URI (§16.6 step 6).
    """
    max_forwards = request.max_forwards
    forwarded = request.with_max_forwards(
        DEFAULT_MAX_FORWARDS if max_forwards is None else max_forwards - 1
    )
    for value in reversed(record_route):
        forwarded = forwarded.with_header_first("record-route", value)
    routes = forwarded.route
    if routes and "lr" not in routes[0].uri.params:
        forwarded = forwarded.without_first_value("route").with_header_last(
            "route", f"<{forwarded.uri_raw}>"
        )
        forwarded = forwarded.with_uri(routes[0].uri)
    return forwarded


def target_of(request: Request, destination: NextHop | None) -> NextHop:
    """Where a forwarded request goes: an explicit destination, else the top Route, else
    the Request-URI (RFC 3261 §16.6 step 7, RFC 3263 §4).

    Give it the request as received (after `strip_own_routes`), before `prepare_forward`.
    """
    if destination is not None:
        return destination
    routes = request.route
    if routes:
        # §16.6 step 7: the top Route, loose router or strict; for a strict one, step 6
        # (prepare_forward) makes its URI the Request-URI: the same place.
        return next_hop_of(routes[0].uri)
    return next_hop_of(request.uri)


def stamp_received(request: Request, source: Address) -> Request:
    """Note on the top Via where the request really came from (RFC 3261 §18.2.1, RFC 3581
    §4), so that responses find their way back through NATs.

    ``received`` gets the source IP when it differs from the sent-by host, and replaces
    whatever ``received`` the client wrote (§18.2.1 has the server set it: a client's
    own would send responses elsewhere); ``rport``, when the client asked for it, gets
    the source port (and ``received`` the source IP), whatever value the client gave it.
    """
    stamped = stamped_via(request.top_via, source)
    if stamped is None:
        return request
    return request.with_first_value_replaced("via", stamped)


def stamped_via(top: Via, source: Address) -> str | None:
    """The text of `top` stamped as `stamp_received` says, or None when it needs nothing."""
    host = source.host
    received = top.received
    changes: dict[str, str | None] = {}
    if top.has_rport:
        port = str(source.port)
        if top.rport != port:
            changes["rport"] = port
        if received != host:
            changes["received"] = host
    elif received is not None:
        if received != host:
            changes["received"] = host
    elif normalise_host(top.host) != host:
        changes["received"] = host
    if not changes:
        return None
    return top.with_params_text(**changes)


def forward_request(
    request: Request,
    *,
    via: str,
    record_route: tuple[str, ...] = (),
    source: Address | None = None,
    reliable: bool = False,
) -> Request:
    """The request as it leaves (RFC 3261 §16.6 steps 3-8), with every edit in one copy.

    The same message as ``prepare_forward(stamp_received(request, source),
    record_route=record_route)``, then ``with_body(body)`` when `reliable`, then
    ``with_header_first("via", via)``; a request for a strict router (§16.6 step 6,
    rare) is edited that way, step by step.

    Args:
        request: the request as received (after `strip_own_routes`).
        via: our Via (`via_value`).
        record_route: our Record-Route entries, top first.
        source: where the request came from, to stamp on its top Via; None: no stamp.
        reliable: it goes over a stream, which needs Content-Length (§20.14).
    """
    routes = request.route
    if routes and "lr" not in routes[0].uri.params:
        stamped = request if source is None else stamp_received(request, source)
        forwarded = prepare_forward(stamped, record_route=record_route)
        if reliable:
            forwarded = forwarded.with_body(forwarded.body)
        return forwarded.with_header_first("via", via)
    max_forwards = request.max_forwards
    return request.forwarded(
        via=via,
        max_forwards=DEFAULT_MAX_FORWARDS if max_forwards is None else max_forwards - 1,
        record_route=record_route,
        top_via=None if source is None else stamped_via(request.top_via, source),
        content_length=reliable,
    )


def stamped_source(via: Via) -> Address | None:
    """Where the request that `via` is the top Via of came from, as `stamp_received`
    noted it: for relaying a response upstream statelessly (RFC 3261 §18.2.2 read
    on a Via whose ``received`` and ``rport`` are ours).

    Returns:
        The transport, the received IP (else the sent-by host) and the rport value (else
        the sent-by port or the transport's default); None when neither host is an IP
        literal (then the Via was not stamped by us, and only DNS could say).
    """
    transport = via.transport.lower()
    host = via.received or via.host
    if not is_ip_literal(host):
        return None
    rport = via.rport
    port = (
        int(rport)
        if rport and rport.isascii() and rport.isdigit() and 0 < int(rport) <= 65535
        else via.port or DEFAULT_PORTS.get(transport, 5060)
    )
    return Address(transport, normalise_host(host), port)
