"""A seeded mutator of SIP messages, and the peers of a wire fuzz against a running proxy.

Theory of operation
-------------------

`Mutator` makes an endless sequence of `Case`s that depends only on its seed: the same
seed gives the same bytes on any machine, so a failure is reproduced by its seed and
index. Each case starts from one of the valid messages of `templates` (requests INVITE,
OPTIONS, BYE, ACK, CANCEL, REGISTER and MESSAGE with one to three Vias, Route,
Record-Route and Contact; responses 100, 180, 200 and 487 that match no transaction,
the proxy's Via on top) and applies one to three mutations: byte flips, hostile bytes
(NUL, CR, LF, invalid UTF-8, ``;;;``, ``<>``, ``@@``, ``[``, huge numbers), duplicated,
deleted and truncated headers, runs of whitespace and line folds, broken line endings
and Content-Lengths, and above all hostile values in the fields a proxy reads: the
Request-URI, the top and the *second* Via (what a response is relayed by), Route,
Record-Route, Contact, From, To, CSeq, Max-Forwards. `known_cases` are hand-written
messages that once ended the proxy; a run sends them before the mutations.

Every template names 127.0.0.1 only (the caller, the proxy, other ports of the
machine), and each case has a Call-ID of its own (``fz-<seed>-<index>``), so that an
answer, a log line or a relayed request leads back to the case that caused it.

The peers: `FuzzCallee` answers 200 to every request the proxy relays to it, and keeps
what it could not parse or answer; `TcpFuzzClient` sends cases over TCP connections,
reopening one when the proxy closes it, and keeps every response; `judge` says what is
wrong with a response the proxy sent to the fuzzer.

Nothing in the rest of triosip imports this module.
"""

from __future__ import annotations

import logging
import random
import socket
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

import trio

from triosip.sip import ParseError, Request, Response, StreamParser, build_response

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from triosip.testing.proxy import UdpPeer
    from triosip.transport import Address

__all__ = [
    "ALLOWED_STATUSES",
    "Case",
    "FuzzCallee",
    "Mutator",
    "TcpFuzzClient",
    "judge",
    "keep_on_this_machine",
    "known_cases",
    "open_tcp_fuzz_client",
    "templates",
]

logger = logging.getLogger(__name__)

ALLOWED_STATUSES = frozenset({100, 400, 404, 408, 413, 416, 420, 481, 482, 483, 487, 500, 503, 505})
"""What a proxy running the default routes in front of a callee that answers 200 may send
to a fuzzer besides a 2xx: 100 Trying, the answers to malformed or refused requests (RFC
3261 §8.2, §16.3: 400, 413, 416, 420, 482, 483, 505), 481 to a CANCEL that matches
nothing (§16.10), 404 and 503 from the routes (no route, no next hop), 408 and 487 when
a branch times out or is cancelled, 500 "Next Hop Unavailable" when the only branch's
transport failed (the 503 of RFC 3261 §16.9, which §16.7 step 6 turns into a 500). Never
500 "Server Internal Error": that is the answer to a route that raised. Any 2xx may come:
the callee's 200, this hop's to a CANCEL, or a stray 2xx of the fuzzer's own relayed back
to it (RFC 6026 §8.4)."""

HOSTILE_BYTES: tuple[bytes, ...] = (
    b"\x00",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\xff\xfe",
    b"\xc3\x28",
    b"\x80",
    b"\xed\xa0\x80",
    b";;;",
    b"<>",
    b"@@",
    b"[",
    b"]",
    b"[::1",
    b"::",
    b":",
    b",",
    b",,",
    b";",
    b"=",
    b'"',
    b"\\",
    b"%",
    b"%00",
    b"%zz",
    b"99999999999999999999",
    b"4294967296",
    b"65536",
    b"-1",
    b"0",
    b" ",
    b"\t",
    b"\r\n ",
    b"sip:",
    b"<sip:>",
    b"<sip:@>",
    b"<",
    b">",
    b"*",
    b";lr",
    b";maddr=",
    b";received=",
    b";rport",
    b";rport=",
    b";branch=",
    b";branch=z9hG4bK",
    b";transport=",
    b";transport=tcp",
    b";tag=",
    b"SIP/2.0/",
    b"\xef\xbb\xbf",
)
"""Bytes that parsers of SIP trip on, inserted anywhere."""

HOSTILE_VALUES: tuple[bytes, ...] = (
    b"",
    b" ",
    b";;;",
    b"<>",
    b"@@",
    b"[",
    b"<",
    b"sip:",
    b"sip:@",
    b"<sip:@>",
    b"<sip:127.0.0.1",
    b"<sip:[::1>",
    b"<sip:127.0.0.1:99999999999999999999;lr>",
    b"<sip:127.0.0.1:0;lr>",
    b"<sip:127.0.0.1;lr>, <;;;>",
    b"<sip:127.0.0.1;lr>,",
    b",",
    b"<sips:@@;lr>",
    b"<tel:>",
    b"<mailto:x>",
    b"<sip:127.0.0.1;maddr=;transport=>",
    b'"unterminated <sip:a@127.0.0.1>',
    b"*",
    b"SIP/2.0/UDP",
    b"SIP/2.0/UDP ;;;",
    b"SIP/2.0/UDP ",
    b"SIP/2.0/UDP 127.0.0.1:99999999999999999999;branch=z9hG4bK-x",
    b"SIP/2.0/UDP 127.0.0.1:-1;branch=z9hG4bK-x",
    b"SIP/2.0/UDP [::1;branch=z9hG4bK-x",
    b"SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-x;received=;rport=x",
    b"SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-x;maddr=[;ttl=999",
    b"SIP/2.0/TCP 127.0.0.1:0;branch=",
    b"SIP/2.0/FOO 127.0.0.1;branch=z9hG4bK-x",
    b"SIP/3.0/UDP 127.0.0.1;branch=z9hG4bK-x",
    b"SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-x, ;;;",
    b"99999999999999999999",
    b"-1",
    b"4294967296",
    b"1 INVITE x",
    b"99999999999999999999 INVITE",
    b"-1 INVITE",
    b"1",
    b"abc",
    b"\x00",
    b"\xff\xfe\xfd",
)
"""Whole header values that a proxy must refuse (or relay) without tripping."""

HOSTILE_URIS: tuple[bytes, ...] = (
    b"sip:",
    b"sip:@",
    b"sip:@@",
    b"sip:[",
    b"sip:[::1",
    b"sip:bob@127.0.0.1:99999999999999999999",
    b"sip:bob@127.0.0.1:-1",
    b"sip:bob@127.0.0.1;maddr=;transport=",
    b"sip:bob@127.0.0.1;;;",
    b"sip:bob@;lr",
    b"sips:bob@127.0.0.1",
    b"tel:",
    b"foo:bar",
    b"<sip:bob@127.0.0.1>",
    b"*",
    b"sip:%00@127.0.0.1",
    b"sip:b\xffob@127.0.0.1",
)
"""Request-URIs for the start line."""

_FIELDS_OF_REQUESTS = (
    "request-uri",
    "request-uri",
    "via",
    "via2",
    "via2",
    "via2",
    "route",
    "route",
    "record-route",
    "contact",
    "contact",
    "from",
    "to",
    "call-id",
    "cseq",
    "max-forwards",
    "content-length",
    "proxy-require",
)
_FIELDS_OF_RESPONSES = (
    "via",
    "via2",
    "via2",
    "via2",
    "record-route",
    "contact",
    "from",
    "to",
    "cseq",
    "content-length",
)
_NAMES = {
    "via": (b"via", b"v"),
    "route": (b"route",),
    "record-route": (b"record-route",),
    "contact": (b"contact", b"m"),
    "from": (b"from", b"f"),
    "to": (b"to", b"t"),
    "call-id": (b"call-id", b"i"),
    "cseq": (b"cseq",),
    "max-forwards": (b"max-forwards",),
    "content-length": (b"content-length", b"l"),
    "proxy-require": (b"proxy-require",),
}
_SPELLING = {
    "via": b"Via",
    "route": b"Route",
    "record-route": b"Record-Route",
    "contact": b"Contact",
    "from": b"From",
    "to": b"To",
    "call-id": b"Call-ID",
    "cseq": b"CSeq",
    "max-forwards": b"Max-Forwards",
    "content-length": b"Content-Length",
    "proxy-require": b"Proxy-Require",
}
_METHODS = (b"INVITE", b"ACK", b"BYE", b"CANCEL", b"OPTIONS", b"FOO", b"", b"INV\x00ITE", b"invite")
_VERSIONS = (b"SIP/2.0", b"SIP/3.0", b"SIP/2.00", b"HTTP/1.1", b"SIP/", b"sip/2.0", b"")
_STATUSES = (b"000", b"99", b"100", b"199", b"200", b"299", b"699", b"700", b"2OO", b"-200", b"")
_COUNTS = (b"0", b"1", b"-1", b"65535", b"65536", b"99999999999999999999", b"x", b"", b"1 1")

_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\n"
)


@dataclass(frozen=True, slots=True)
class Case:
    """One message of a fuzz run.

    Attributes:
        seed: the seed of the `Mutator` that made it.
        index: its place in that mutator's sequence (0 for the first).
        template: the name of the valid message it started from (or of the known case).
        mutations: what was done to it, in order.
        data: the bytes to send.
    """

    seed: int
    index: int
    template: str
    mutations: tuple[str, ...]
    data: bytes

    @property
    def call_id(self) -> str:
        """The Call-ID the case was built with (its mutations may have broken it)."""
        return call_id_of(self.seed, self.index)

    def describe(self) -> str:
        """The case for a failure message: how to make it again, and its bytes."""
        return (
            f"seed={self.seed} index={self.index} template={self.template!r} "
            f"mutations={list(self.mutations)} ({len(self.data)} bytes):\n{self.data!r}"
        )


def call_id_of(seed: int, index: int) -> str:
    """The Call-ID of the case `index` of the mutator seeded with `seed`."""
    return f"fz-{seed}-{index}"


def templates(caller: str, proxy: str, *, transport: str = "UDP") -> dict[str, bytes]:
    """The valid messages mutations start from.

    ``CALLID`` in each stands for the case's Call-ID.

    Args:
        caller: ``host:port`` of the fuzzer: the top Via of requests, the second of
            responses, so that what the proxy answers comes back to it.
        proxy: ``host:port`` of the proxy under test: the Route it strips, the
            Request-URI of OPTIONS, the top Via of stray responses.
        transport: the Via transport, ``UDP`` or ``TCP``.

    Returns:
        The templates, by name.
    """
    t = transport.encode()
    c = caller.encode()
    p = proxy.encode()
    top = b"Via: SIP/2.0/" + t + b" " + c + b";branch=z9hG4bK-fz-CALLID;rport"
    lower = (
        b"Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-low1;received=127.0.0.1",
        b"Via: SIP/2.0/TCP 127.0.0.1:5072;branch=z9hG4bK-low2;rport=5072",
    )
    parties = (
        b'From: "Alice" <sip:alice@127.0.0.1>;tag=fz-a',
        b"Call-ID: CALLID",
        b"Max-Forwards: 70",
    )
    contact = b"Contact: <sip:alice@" + c + b";transport=" + t.lower() + b">"

    def request(
        method: bytes,
        uri: bytes,
        *lines: bytes,
        vias: int = 1,
        tag: bool = False,
        body: bytes = b"",
    ) -> bytes:
        to = b"To: <sip:bob@127.0.0.1>" + (b";tag=fz-b" if tag else b"")
        head = (method + b" " + uri + b" SIP/2.0", top, *lower[: vias - 1], *parties, to)
        return _join(*head, b"CSeq: 1 " + method, *lines, body=body)

    stray_top = b"Via: SIP/2.0/" + t + b" " + p + b";branch=z9hG4bK-ts0123456789.fz-CALLID"

    def response(
        status: bytes, *lines: bytes, method: bytes = b"INVITE", body: bytes = b""
    ) -> bytes:
        head = (b"SIP/2.0 " + status, stray_top, top, *lower[:1], *parties)
        to = b"To: <sip:bob@127.0.0.1>;tag=fz-b"
        return _join(*head, to, b"CSeq: 1 " + method, *lines, body=body)

    sdp = (b"Content-Type: application/sdp",)
    route = b"Route: <sip:" + p + b";lr>"
    return {
        "invite": request(b"INVITE", b"sip:bob@127.0.0.1", contact, *sdp, body=_SDP),
        "invite 3 vias": request(
            b"INVITE",
            b"sip:bob@127.0.0.1:5080;transport=" + t.lower(),
            contact,
            b"Record-Route: <sip:127.0.0.1:5071;lr>, <sip:127.0.0.1:5072;lr;transport=tcp>",
            b"Supported: 100rel, timer",
            *sdp,
            vias=3,
            body=_SDP,
        ),
        "options": request(b"OPTIONS", b"sip:" + p, b"Accept: application/sdp", vias=2),
        "register": request(
            b"REGISTER", b"sip:127.0.0.1", contact + b";expires=60", b"Expires: 3600"
        ),
        "message": request(
            b"MESSAGE",
            b"sip:bob@127.0.0.1",
            b"Content-Type: text/plain",
            vias=2,
            body=b"hello",
        ),
        "bye": request(b"BYE", b"sip:bob@" + p, route, vias=2, tag=True),
        "bye routed on": request(
            b"BYE",
            b"sip:bob@127.0.0.1:5080",
            route + b", <sip:127.0.0.1:5073;lr>",
            b"Route: <sip:127.0.0.1:5074;lr;transport=tcp>",
            tag=True,
        ),
        "ack of 2xx": request(b"ACK", b"sip:bob@" + p, route, contact, tag=True),
        "ack of 4xx": request(b"ACK", b"sip:bob@127.0.0.1", tag=True),
        "cancel": request(b"CANCEL", b"sip:bob@127.0.0.1"),
        "re-invite": request(
            b"INVITE",
            b"sip:bob@" + p,
            route,
            b"Record-Route: <sip:127.0.0.1:5071;lr>",
            contact,
            *sdp,
            vias=3,
            tag=True,
            body=_SDP,
        ),
        "100": response(b"100 Trying"),
        "180": response(
            b"180 Ringing",
            b"Record-Route: <sip:" + p + b";lr>",
            b"Contact: <sip:bob@127.0.0.1:5080>",
        ),
        "200": response(
            b"200 OK",
            b"Record-Route: <sip:" + p + b";lr>, <sip:127.0.0.1:5071;lr>",
            b"Contact: <sip:bob@127.0.0.1:5080>",
            *sdp,
            body=_SDP,
        ),
        "200 to bye": response(b"200 OK", method=b"BYE"),
        "487": response(b"487 Request Terminated"),
    }


def _join(*lines: bytes, body: bytes = b"") -> bytes:
    return b"\r\n".join((*lines, b"Content-Length: %d" % len(body), b"", b"")) + body


def known_cases(proxy: str) -> dict[str, bytes]:
    """Hand-written messages that ended (or almost ended) the proxy once.

    Args:
        proxy: ``host:port`` of the proxy under test.

    Returns:
        The messages, by name; ``CALLID`` stands for the Call-ID.
    """
    rest = (
        b"From: <sip:alice@127.0.0.1>;tag=fz-a",
        b"To: <sip:bob@127.0.0.1>;tag=fz-b",
        b"Call-ID: CALLID",
        b"CSeq: 1 INVITE",
    )
    return {
        # A stray 2xx is forwarded statelessly (RFC 6026 §8.4), which reads every Via:
        # the lower one did not parse and the ParseError ended the proxy.
        "stray 2xx, bad lower via": _join(
            b"SIP/2.0 200 OK",
            b"Via: SIP/2.0/UDP 127.0.0.1:5;branch=z9hG4bK-1",
            b"Via: SIP/2.0/UDP ;;;",
            *rest,
        ),
        "stray 2xx via the proxy, bad lower via": _join(
            b"SIP/2.0 200 OK",
            b"Via: SIP/2.0/UDP " + proxy.encode() + b";branch=z9hG4bK-ts0123456789.1",
            b"Via: SIP/2.0/UDP ;;;",
            *rest,
        ),
        # The lower Via names a host: sending to it made the proxy resolve the name with a
        # blocking call in the event loop ("localhost": /etc/hosts, no DNS traffic).
        "stray 2xx via the proxy, lower via by name": _join(
            b"SIP/2.0 200 OK",
            b"Via: SIP/2.0/UDP " + proxy.encode() + b";branch=z9hG4bK-ts0123456789.1",
            b"Via: SIP/2.0/UDP localhost:9;branch=z9hG4bK-2",
            *rest,
        ),
    }


class Mutator:
    """An endless, reproducible sequence of mutated SIP messages.

    Args:
        seed: the seed; the same seed gives the same cases.
        caller: ``host:port`` the templates name as the sender (see `templates`).
        proxy: ``host:port`` of the proxy under test.
        transport: ``UDP`` or ``TCP``, for the Vias and Contacts.
        max_run: the longest run of whitespace or folds most cases get.
        big_run: the longest one that one case in fifty gets (parsing must stay linear
            in the message's size).
        max_size: no case is longer than this.
    """

    def __init__(
        self,
        seed: int,
        *,
        caller: str,
        proxy: str,
        transport: str = "UDP",
        max_run: int = 64,
        big_run: int = 2000,
        max_size: int = 60000,
    ) -> None:
        self.seed = seed
        self.index = 0
        self._rng = random.Random(seed)
        self._templates = sorted(templates(caller, proxy, transport=transport).items())
        self._known = sorted(known_cases(proxy).items())
        self._max_run = max_run
        self._big_run = big_run
        self._max_size = max_size
        self._operations: tuple[Callable[[list[bytes], bytes], tuple[str, bytes]], ...] = (
            self._field,
            self._field,
            self._field,
            self._field,
            self._start_line,
            self._flip,
            self._insert,
            self._duplicate,
            self._delete,
            self._truncate,
            self._whitespace,
            self._line_endings,
            self._content_length,
        )

    def known(self) -> list[Case]:
        """The `known_cases`, as cases of this mutator (indexes -1, -2...)."""
        cases = []
        for n, (name, data) in enumerate(self._known, start=1):
            call_id = call_id_of(self.seed, -n).encode()
            cases.append(Case(self.seed, -n, name, (), data.replace(b"CALLID", call_id)))
        return cases

    def __iter__(self) -> Mutator:
        return self

    def __next__(self) -> Case:
        rng = self._rng
        name, template = rng.choice(self._templates)
        index = self.index
        self.index += 1
        data = template.replace(b"CALLID", call_id_of(self.seed, index).encode())
        mutations: list[str] = []
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
            head, sep, body = data.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            what, head = rng.choice(self._operations)(lines, body)
            mutations.append(what)
            data = head if what in ("truncate", "line endings") else head + sep + body
        return Case(self.seed, index, name, tuple(mutations), data[: self._max_size])

    # -- the mutations: each takes the lines of the head and the body, and returns what
    # it did and the new head (for "truncate" and "line endings": the whole message).

    def _field(self, lines: list[bytes], body: bytes) -> tuple[str, bytes]:
        rng = self._rng
        is_request = not lines[0].startswith(b"SIP/")
        target = rng.choice(_FIELDS_OF_REQUESTS if is_request else _FIELDS_OF_RESPONSES)
        if target == "request-uri":
            parts = lines[0].split(b" ")
            if len(parts) == 3:
                uri = parts[1]
                parts[1] = rng.choice(HOSTILE_URIS) if rng.random() < 0.4 else self._value(uri)
                lines[0] = b" ".join(parts)
            return "request-uri", b"\r\n".join(lines)
        name = "via" if target == "via2" else target
        where = [n for n, line in enumerate(lines) if _name_of(line) in _NAMES[name]]
        wanted = 2 if target == "via2" else 1
        while len(where) < wanted:
            # Add the header (after the last of its kind, or at the end) so that there
            # is one to mutate: a second Via, a Route, a Record-Route...
            at = where[-1] + 1 if where else len(lines)
            lines.insert(at, _SPELLING[name] + b": " + _default_value(name))
            where.append(at)
        n = where[wanted - 1]
        header, _, value = lines[n].partition(b":")
        lines[n] = header + b": " + self._value(value.strip())
        return target, b"\r\n".join(lines)

    def _value(self, value: bytes) -> bytes:
        rng = self._rng
        choice = rng.randrange(7)
        if choice == 0:
            return rng.choice(HOSTILE_VALUES)
        if choice == 1:
            at = rng.randint(0, len(value))
            return value[:at] + rng.choice(HOSTILE_BYTES) + value[at:]
        if choice == 2:
            return value[: rng.randint(0, len(value))]
        if choice == 3:
            return value + rng.choice(HOSTILE_BYTES) + rng.choice(HOSTILE_BYTES)
        if choice == 4:
            return value + b", " + rng.choice((value, *HOSTILE_VALUES))
        if choice == 5:
            at = rng.randint(0, len(value))
            return value[:at] + self._run() + value[at:]
        if not value:
            return rng.choice(HOSTILE_BYTES)
        at = rng.randrange(len(value))
        return value[:at] + bytes([rng.randrange(256)]) + value[at + 1 :]

    def _start_line(self, lines: list[bytes], body: bytes) -> tuple[str, bytes]:
        rng = self._rng
        parts = lines[0].split(b" ", 2)
        if len(parts) == 3:
            if lines[0].startswith(b"SIP/"):
                part = rng.choice((1, 1, 2))
                parts[part] = rng.choice(_STATUSES if part == 1 else (b"", b"\x00", b"\xff\xfe"))
            else:
                part = rng.choice((0, 2))
                parts[part] = rng.choice(_METHODS if part == 0 else _VERSIONS)
        lines[0] = b" ".join(parts)
        return "start line", b"\r\n".join(lines)

    def _flip(self, lines: list[bytes], body: bytes) -> tuple[str, bytes]:
        head = bytearray(b"\r\n".join(lines))
        if not head:  # an earlier mutation of this case truncated it to nothing
            return "flip", self._rng.choice(HOSTILE_BYTES)
        for _ in range(self._rng.randint(1, 4)):
            head[self._rng.randrange(len(head))] = self._rng.randrange(256)
        return "flip", bytes(head)

    def _insert(self, lines: list[bytes], body: bytes) -> tuple[str, bytes]:
        head = b"\r\n".join(lines)
        at = self._rng.randint(0, len(head))
        return "insert", head[:at] + self._rng.choice(HOSTILE_BYTES) + head[at:]

    def _duplicate(self, lines: list[bytes], body: bytes) -> tuple[str, bytes]:
        n = self._rng.randrange(1, len(lines)) if len(lines) > 1 else 0
        copies = self._rng.choice((1, 1, 2, 10))
        lines[n + 1 : n + 1] = [lines[n]] * copies
        return "duplicate", b"\r\n".join(lines)

    def _delete(self, lines: list[bytes], body: bytes) -> tuple[str, bytes]:
        if len(lines) > 1:
            del lines[self._rng.randrange(1, len(lines))]
        return "delete", b"\r\n".join(lines)

    def _truncate(self, lines: list[bytes], body: bytes) -> tuple[str, bytes]:
        whole = b"\r\n".join(lines) + b"\r\n\r\n" + body
        return "truncate", whole[: self._rng.randint(0, len(whole))]

    def _whitespace(self, lines: list[bytes], body: bytes) -> tuple[str, bytes]:
        n = self._rng.randrange(len(lines))
        line = lines[n]
        at = self._rng.randint(0, len(line))
        lines[n] = line[:at] + self._run() + line[at:]
        return "whitespace", b"\r\n".join(lines)

    def _run(self) -> bytes:
        rng = self._rng
        longest = self._big_run if rng.random() < 0.02 else self._max_run
        length = rng.randint(1, longest)
        unit = rng.choice((b" ", b"\t", b" \t", b"\r\n ", b"\r\n\t"))
        return unit * max(1, length // len(unit))

    def _line_endings(self, lines: list[bytes], body: bytes) -> tuple[str, bytes]:
        rng = self._rng
        ending = rng.choice((b"\n", b"\r", b"\n\r", b""))
        whole = b"\r\n".join(lines) + b"\r\n\r\n" + body
        if rng.random() < 0.5:
            return "line endings", whole.replace(b"\r\n", ending)
        at = rng.randrange(len(lines))
        head = b"\r\n".join(lines[:at]) + ending + b"\r\n".join(lines[at:])
        return "line endings", head + b"\r\n\r\n" + body

    def _content_length(self, lines: list[bytes], body: bytes) -> tuple[str, bytes]:
        lines = [line for line in lines if _name_of(line) not in _NAMES["content-length"]]
        value = self._rng.choice((*_COUNTS, b"%d" % (len(body) + 1)))
        for _ in range(self._rng.choice((1, 1, 2))):
            lines.append(b"Content-Length: " + value)
        return f"content-length {value!r}", b"\r\n".join(lines)


def _name_of(line: bytes) -> bytes:
    return line.partition(b":")[0].strip().lower()


def _default_value(name: str) -> bytes:
    if name == "via":
        return b"SIP/2.0/UDP 127.0.0.1:5075;branch=z9hG4bK-added"
    if name in ("route", "record-route", "contact"):
        return b"<sip:127.0.0.1:5076;lr>"
    return b"1"


def judge(response: Response) -> str | None:
    """What is wrong with a response the proxy under test sent to the fuzzer, if anything.

    Args:
        response: the response.

    Returns:
        None if it is a 2xx or one of `ALLOWED_STATUSES` (a failure with a reason
        phrase), else a sentence saying what is wrong.
    """
    if response.status == 500 and response.reason == "Server Internal Error":
        return f"500 {response.reason!r}: a route raised"
    if response.status // 100 == 2:
        return None
    if response.status not in ALLOWED_STATUSES:
        return f"unexpected status {response.status} {response.reason!r}"
    if response.status >= 300 and not response.reason.strip():
        return f"{response.status} with no reason phrase"
    return None


# -- the peers --------------------------------------------------------------------------------


@dataclass(eq=False)
class FuzzCallee:
    """The callee of a fuzz run: answers 200 to each request the proxy relays to it.

    Attributes:
        peer: its UDP socket (a non-strict `UdpPeer`: it keeps what does not parse).
        answered: how many requests it answered.
        unanswerable: requests it could not answer (``build_response`` raised), with why.
    """

    peer: UdpPeer
    answered: int = 0
    unanswerable: list[tuple[bytes, str]] = field(default_factory=list)

    async def serve(self) -> None:
        """Answer every request (not ACKs) as it comes, until cancelled."""
        while True:
            received = await self.peer.receive()
            request = received.message
            if not isinstance(request, Request) or request.method == "ACK":
                continue
            try:
                response = build_response(request, 200, to_tag="fz-callee")
            except (ParseError, ValueError) as exc:
                self.unanswerable.append((bytes(request), repr(exc)))
                continue
            await self.peer.send(response, received.source)
            self.answered += 1


@dataclass(eq=False)
class TcpFuzzClient:
    """Sends cases to a proxy over TCP, opening a new connection whenever the proxy has
    closed the last one (as it does after a message that breaks the framing).

    Attributes:
        proxy: the proxy's TCP listener.
        responses: every response read back, on any connection.
        garbage: bytes read back that did not parse, with why.
        connections: how many connections it opened.
    """

    proxy: Address
    nursery: trio.Nursery
    responses: list[Response] = field(default_factory=list)
    garbage: list[tuple[bytes, str]] = field(default_factory=list)
    connections: int = 0
    _stream: trio.SocketStream | None = None

    async def send(self, data: bytes) -> None:
        """Send `data` on the current connection, or on a new one if it is closed."""
        for _ in range(2):
            if self._stream is None:
                self._stream = await trio.open_tcp_stream(self.proxy.host, self.proxy.port)
                self.connections += 1
                self.nursery.start_soon(self._read, self._stream, name="tcp fuzz reader")
            try:
                await self._stream.send_all(data)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._stream = None

    async def close(self) -> None:
        """Close the current connection."""
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    async def _read(self, stream: trio.SocketStream) -> None:
        parser = StreamParser()
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    break
                parser.feed(data)
                while True:
                    try:
                        message = parser.next_message()
                    except ParseError as exc:
                        self.garbage.append((data, str(exc)))
                        return
                    if message is None:
                        break
                    if isinstance(message, Response):
                        self.responses.append(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if self._stream is stream:
                self._stream = None
            await stream.aclose()


@asynccontextmanager
async def open_tcp_fuzz_client(proxy: Address) -> AsyncIterator[TcpFuzzClient]:
    """A `TcpFuzzClient` whose reading tasks run until the block ends.

    Owns a nursery with one reading task per connection, cancelled when the block ends.
    """
    async with trio.open_nursery() as nursery:
        client = TcpFuzzClient(proxy, nursery)
        yield client
        await client.close()
        nursery.cancel_scope.cancel()


# -- keeping a fuzz run on this machine -----------------------------------------------------


class _NoNames(trio.abc.HostnameResolver):
    """Every name is unknown: the proxy may look names up, but never on the network."""

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,  # noqa: A002 (trio's own name)
        proto: int = 0,
        flags: int = 0,
    ) -> NoReturn:
        raise socket.gaierror(socket.EAI_NONAME, f"{host!r}: no names in a fuzz run")

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> NoReturn:
        raise socket.gaierror(socket.EAI_NONAME, "no names in a fuzz run")


class _LoopbackStreams(trio.abc.SocketFactory):
    """TCP sockets bound to loopback before they connect: the kernel then refuses any
    destination off this machine (EINVAL), whatever address a mutation made."""

    def socket(
        self,
        family: socket.AddressFamily | int = socket.AF_INET,
        type: socket.SocketKind | int = socket.SOCK_STREAM,  # noqa: A002 (trio's own name)
        proto: int = 0,
    ) -> trio.socket.SocketType:
        sock = socket.socket(family, type, proto)
        if type == socket.SOCK_STREAM:
            sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        return trio.socket.from_stdlib_socket(sock)


def keep_on_this_machine() -> None:
    """Within the current ``trio.run``: every host name fails to resolve, and every TCP
    socket trio opens is bound to loopback first. UDP needs nothing: the proxy sends from
    its listeners, bound to 127.0.0.1, and the kernel refuses to route those elsewhere.

    (A name that reaches a stdlib ``sendto`` unresolved is looked up by the C library,
    which this cannot stop: /etc/hosts, then the system's resolver.)
    """
    trio.socket.set_custom_hostname_resolver(_NoNames())
    trio.socket.set_custom_socket_factory(_LoopbackStreams())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m triosip.testing.fuzz run ...``: ``triosip``'s command line, with
    `keep_on_this_machine` in force, for a proxy under a long fuzz (bench/bench_fuzz.py).
    """
    from triosip import cli

    real_run = trio.run

    def guarded_run(function: Callable[..., Awaitable[object]], *args: object) -> object:
        async def guarded() -> object:
            keep_on_this_machine()
            return await function(*args)

        return real_run(guarded)

    trio.run = guarded_run  # type: ignore[assignment]
    try:
        return cli.main(argv)
    finally:
        trio.run = real_run


if __name__ == "__main__":
    sys.exit(main())
