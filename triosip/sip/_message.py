"""Messages as values: Request, Response, and the edits a proxy makes to them.

Theory of operation
-------------------
A message is a frozen slotted dataclass whose fields are what it is on the wire: the
start line's parts, ``lines`` (each header line as received, folds kept, decoded from
UTF-8 with ``errors="surrogateescape"`` so that encoding it gives back the exact bytes)
and ``body``. Serializing writes the start line, the lines and the body back, so a line
nobody touched goes out byte for byte (RFC 3261 §16.6: a proxy changes only what it
must), and an unmodified parsed message gives back exactly the bytes it came from.

Everything else is derived, on first access, into a private cache (`_State`): the
canonical name of each line, the typed fields (`top_via`, `cseq`, `from_`…), the URI.
The parser fills in the fields it validated eagerly (``_parser.py``), so reading them is
a slot load. The cache sits in a private slot set with ``object.__setattr__`` because the
dataclass is frozen; it only ever holds pure functions of the fields, so two messages
with equal fields behave the same and the value semantics hold. It is never shared: an
edit builds a new message with a new cache, copying the entries of the header fields the
edit did not touch.

Edits (``with_header_first``, ``without_first_value``, ``with_uri``…) return new messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Self

from triosip.sip import _abnf
from triosip.sip._errors import LocalSIPError
from triosip.sip._fields import (
    AddressParts,
    CSeq,
    NameAddr,
    Via,
    ViaParts,
    check_address,
    check_cseq,
    first_via,
    new_cseq,
    new_name_addr,
    new_via,
    parse_addresses,
    parse_vias,
)
from triosip.sip._headers import (
    Header,
    _encode,
    _line_value,
    _make_line,
    canonical_name,
    names_of,
    spelling,
)
from triosip.sip._parse_error import ParseError
from triosip.sip._text import show, split_commas, unfold
from triosip.sip._uri import URI, uri_of

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

_new = object.__new__
_set = object.__setattr__

# RFC 3261 §8.1.1.7: a branch made by an RFC 3261 element starts with this.
MAGIC_COOKIE: Final = "z9hG4bK"


class _State:
    """The private per-message cache: derived values, filled in as they are read.

    Class attributes are the "not computed yet" defaults, so that creating one costs an
    empty instance dict and the parser stores only what it computed.
    """

    wire: bytes | None = None  # the exact bytes parsed, or serialized
    names: tuple[str, ...] | None = None  # canonical name of each line
    headers: tuple[Header, ...] | None = None
    # What the parser checked (RFC 3261 §8.1.1): text and parts, made into values when read
    via_p: tuple[str, ViaParts] | None = None
    from_p: tuple[str, AddressParts] | None = None
    to_p: tuple[str, AddressParts] | None = None
    call_id: str | None = None
    cseq_p: tuple[str, str] | None = None
    max_forwards_known: bool = False
    max_forwards: int | None = None
    content_length: int | None = None
    # The values
    top_via: Via | None = None
    vias: tuple[Via, ...] | None = None
    from_: NameAddr | None = None
    to: NameAddr | None = None
    cseq: CSeq | None = None
    route: tuple[NameAddr, ...] | None = None
    record_route: tuple[NameAddr, ...] | None = None
    contact: tuple[NameAddr, ...] | None = None
    contact_star: bool = False
    uri: URI | None = None
    # check_message's rule ran on the parser's fast path and passed (_check.accept_parsed)
    accepted: bool = False


# Which cache entries belong to which header: an edit of that header drops them.
_ENTRIES: Final[Mapping[str, tuple[str, ...]]] = {
    "via": ("via_p", "top_via", "vias"),
    "from": ("from_p", "from_"),
    "to": ("to_p", "to"),
    "call-id": ("call_id",),
    "cseq": ("cseq_p", "cseq"),
    "max-forwards": ("max_forwards_known", "max_forwards"),
    "content-length": ("content_length",),
    "route": ("route",),
    "record-route": ("record_route",),
    "contact": ("contact", "contact_star"),
}
_ALWAYS_DROPPED: Final = ("wire", "headers", "names", "accepted")
_DROPPED: Final[Mapping[str, tuple[str, ...]]] = {
    name: _ALWAYS_DROPPED + entries for name, entries in _ENTRIES.items()
}
# What Request.forwarded drops (Max-Forwards and Content-Length it sets anew).
_FORWARD_DROPPED: Final = (
    *_ALWAYS_DROPPED,
    *_ENTRIES["via"],
    *_ENTRIES["record-route"],
)


def _resets(keys: tuple[str, ...]) -> dict[str, object]:
    # The cache entries `keys` at their "not yet" defaults: merged over a copy of a cache
    # (``{**old, **resets}``), they drop those entries in one step, without a call per key.
    return {key: getattr(_State, key) for key in keys}


_ALWAYS_RESET: Final = _resets(_ALWAYS_DROPPED)
_RESET: Final[Mapping[str, dict[str, object]]] = {
    name: _resets(dropped) for name, dropped in _DROPPED.items()
}
_FORWARD_RESET: Final = _resets(_FORWARD_DROPPED)
# The canonical name of the spellings our code asks for, looked up without a call
# (canonical_name for any other).
_CANONICAL: Final[Mapping[str, str]] = {
    spelled: canonical_name(spelled)
    for name in (
        *_ENTRIES,
        "proxy-require",
        "require",
        "supported",
        "timestamp",
        "content-type",
        "user-agent",
        "allow",
        "expires",
        "event",
    )
    for spelled in (name, spelling(name))
}


def _replace_line(lines: list[str], names: list[str], name: str, line: str) -> None:
    # As Message.with_header_replaced, on lists: the first line of `name` becomes `line`,
    # its other lines go; added last when absent.
    if name not in names:
        lines += (line,)
        names += (name,)
        return
    position = names.index(name)
    lines[position] = line
    if names.count(name) > 1:
        kept = [n for n, line_name in enumerate(names) if line_name != name or n == position]
        lines[:] = [lines[n] for n in kept]
        names[:] = [names[n] for n in kept]


class _MessageSlots:
    __slots__ = ("_state",)
    _state: _State


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Message(_MessageSlots):
    """What requests and responses share: header lines, body, typed fields and edits.

    Header access is case-insensitive and folds in the compact forms. The typed fields
    are parsed on first access and cached; the parser checks `top_via`, `from_`, `to`,
    `call_id`, `cseq`, `max_forwards` (requests) and `content_length` eagerly, so on a
    parsed message they never raise. On a message built by hand or edited, any of them
    may raise `ParseError` when its header is missing or malformed.

    Attributes:
        lines: the header lines as received (folds kept), decoded from UTF-8 with
            ``errors="surrogateescape"``, without their CRLF.
        body: the body, exactly ``Content-Length`` bytes.
    """

    lines: tuple[str, ...] = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_state", _State())

    # -- generic header access ------------------------------------------------------

    def _names(self) -> tuple[str, ...]:
        # The canonical name of each line, aligned with `lines`: the parser leaves it in
        # the cache, edits pass on an updated copy, a message built by hand computes it.
        state = self._state
        names = state.names
        if names is None:
            names = state.names = names_of(self.lines)
        return names

    @property
    def headers(self) -> tuple[Header, ...]:
        """Every header line, in order, as `Header` values."""
        state = self._state
        headers = state.headers
        if headers is None:
            headers = state.headers = tuple(
                Header(name, _encode(line))
                for name, line in zip((self._state.names or self._names()), self.lines, strict=True)
            )
        return headers

    def header(self, name: str) -> str | None:
        """The value of the first line of a header, or None if absent.

        Args:
            name: any spelling, long or compact ("Call-ID", "call-id", "i").
        """
        canonical = _CANONICAL[name] if name in _CANONICAL else canonical_name(name)
        names = self._state.names or self._names()
        if canonical not in names:
            return None
        return _line_value(self.lines[names.index(canonical)])

    def header_lines(self, name: str) -> list[str]:
        """The value of each line of a header, in order."""
        canonical = _CANONICAL[name] if name in _CANONICAL else canonical_name(name)
        names = self._state.names or self._names()
        count = names.count(canonical)
        if count == 0:
            return []
        if count == 1:  # the usual case: no scan in Python
            return [_line_value(self.lines[names.index(canonical)])]
        # A scan of a dozen names costs less than a name -> line numbers index kept per
        # message, whose lists the garbage collector would walk for as long as a
        # transaction keeps the message (64*T1 after a call's end).
        return [
            _line_value(line)
            for line, line_name in zip(self.lines, names, strict=True)
            if line_name == canonical
        ]

    def header_values(self, name: str) -> list[str]:
        """Every comma-separated value of a header over all its lines (RFC 3261 §7.3.1).

        Commas inside quoted strings and ``<>`` do not separate; empty elements are
        skipped. Only meaningful for list headers: not for Date, WWW-Authenticate and
        the other headers whose values hold commas of their own.
        """
        return [value for line in self.header_lines(name) for value in split_commas(line) if value]

    def has_header(self, name: str) -> bool:
        """Whether the message has at least one line of that header."""
        canonical = _CANONICAL[name] if name in _CANONICAL else canonical_name(name)
        return canonical in (self._state.names or self._names())

    def _single_value(self, name: str, label: str) -> str | None:
        # RFC 3261 §7.3.1: a header that is not a list appears at most once.
        names = self._state.names or self._names()
        count = names.count(name)
        if count == 0:
            return None
        if count > 1:
            raise ParseError(f"Several {label} header lines")
        return _line_value(self.lines[names.index(name)])

    def _required_value(self, name: str, label: str) -> str:
        value = self._single_value(name, label)
        if value is None:
            raise ParseError(f"Missing {label}")
        return value

    # -- typed fields -----------------------------------------------------------------

    @property
    def top_via(self) -> Via:
        """The first via-parm of the first Via line (RFC 3261 §8.1.1.7, §18.2.2)."""
        state = self._state
        via = state.top_via
        if via is None:
            parsed = state.via_p
            if parsed is None:
                names = self._state.names or self._names()
                if "via" not in names:
                    raise ParseError("Missing Via")
                text, parts, _ = first_via(_line_value(self.lines[names.index("via")]))
                parsed = state.via_p = (text, parts)
            via = state.top_via = new_via(*parsed)
        return via

    @property
    def via(self) -> tuple[Via, ...]:
        """Every via-parm, top first, over all Via lines (parsed on first access)."""
        state = self._state
        vias = state.vias
        if vias is None:
            top = self.top_via
            # The rest of the first line ("Via: a, b"), then every further Via line.
            values = self.header_lines("via")
            # A first line that is the top via-parm alone has no rest to read: skip the
            # second match of it (check_message reads `via` for every message).
            rest = None if values[0] == top.text else first_via(values[0])[2]
            others = parse_vias(([rest] if rest is not None else []) + values[1:])
            vias = state.vias = (top, *others)
        return vias

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        state = self._state
        call_id = state.call_id
        if call_id is None:
            value = self._required_value("call-id", "Call-ID")
            call_id = state.call_id = check_call_id(value)
        return call_id

    @property
    def cseq(self) -> CSeq:
        """The CSeq: number and method."""
        state = self._state
        cseq = state.cseq
        if cseq is None:
            parsed = state.cseq_p
            if parsed is None:
                parsed = state.cseq_p = check_cseq(self._required_value("cseq", "CSeq"))
            cseq = state.cseq = new_cseq(*parsed)
        return cseq

    @property
    def from_(self) -> NameAddr:
        """The From header (``from`` is a Python keyword)."""
        state = self._state
        addr = state.from_
        if addr is None:
            parsed = state.from_p
            if parsed is None:
                text = self._required_value("from", "From")
                parsed = state.from_p = (text, check_address(text, "From"))
            addr = state.from_ = new_name_addr(*parsed)
        return addr

    @property
    def to(self) -> NameAddr:
        """The To header."""
        state = self._state
        addr = state.to
        if addr is None:
            parsed = state.to_p
            if parsed is None:
                text = self._required_value("to", "To")
                parsed = state.to_p = (text, check_address(text, "To"))
            addr = state.to = new_name_addr(*parsed)
        return addr

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (0..255), or None when absent."""
        state = self._state
        if not state.max_forwards_known:
            value = self._single_value("max-forwards", "Max-Forwards")
            state.max_forwards = None if value is None else check_max_forwards(value)
            state.max_forwards_known = True
        return state.max_forwards

    @property
    def content_length(self) -> int:
        """The Content-Length header's value; the body's length when it has none."""
        state = self._state
        length = state.content_length
        if length is None:
            value = self._single_value("content-length", "Content-Length")
            length = len(self.body) if value is None else check_content_length(value)
            state.content_length = length
        return length

    @property
    def route(self) -> tuple[NameAddr, ...]:
        """The Route entries, top first (parsed on first access)."""
        state = self._state
        route = state.route
        if route is None:
            route = state.route = parse_addresses(
                self.header_lines("route"), header="Route", brackets=True
            )
        return route

    @property
    def record_route(self) -> tuple[NameAddr, ...]:
        """The Record-Route entries, top first (parsed on first access)."""
        state = self._state
        record_route = state.record_route
        if record_route is None:
            record_route = state.record_route = parse_addresses(
                self.header_lines("record-route"), header="Record-Route", brackets=True
            )
        return record_route

    @property
    def contact(self) -> tuple[NameAddr, ...]:
        """The Contact addresses; empty for ``Contact: *`` (see `contact_star`)."""
        state = self._state
        contact = state.contact
        if contact is None:
            values = self.header_lines("contact")
            # RFC 3261 §10.2.2: "Contact: *" (alone) removes every binding of a REGISTER.
            if len(values) == 1 and values[0] == "*":
                state.contact_star = True
                contact = ()
            else:
                contact = parse_addresses(values, header="Contact", brackets=False)
            state.contact = contact
        return contact

    @property
    def contact_star(self) -> bool:
        """Whether the message says ``Contact: *`` (a REGISTER removing all bindings)."""
        self.contact  # noqa: B018  # fills the cache entry
        return self._state.contact_star

    # -- serializing --------------------------------------------------------------------

    def _start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        # Unmodified: the very bytes parsed (from the start line to the end of the body).
        # Edited: start line, the lines as they are (folds and spelling kept), the body,
        # kept for the next call (a proxy serializes a forwarded request to check its
        # size, then to send it). Content-Length is a line like the others: only
        # with_body changes it.
        state = self._state
        wire = state.wire
        if wire is None:
            head = "\r\n".join((self._start_line(), *self.lines, "", ""))
            wire = state.wire = head.encode("utf-8", "surrogateescape") + self.body
        return wire

    # -- edits --------------------------------------------------------------------------

    def _edited(self, lines: tuple[str, ...], names: tuple[str, ...], touched: str) -> Self:
        # A copy with new header lines: the cache keeps what the edit did not touch.
        new = self._clone()
        _set(new, "lines", lines)
        state = _new(_State)
        state.__dict__ = {
            **self._state.__dict__,
            # (an expression rather than .get: one call fewer per edit)
            **(_RESET[touched] if touched in _RESET else _ALWAYS_RESET),  # noqa: SIM401
            "names": names,
        }
        _set(new, "_state", state)
        return new

    def _clone(self) -> Self:
        # A copy of the start line and body fields, without __init__ (lines and the
        # cache are the caller's to set).
        raise NotImplementedError

    def with_header_first(self, name: str, value: str) -> Self:
        """A copy with a new line before the first line of that header.

        Before the first header line if the message has none (RFC 3261 §16.6 step 4
        and step 8: Record-Route and Via go on top).

        Raises:
            LocalSIPError: the name is not a token, or the value holds CR, LF or NUL.
        """
        line, canonical = _make_line(name, value)
        names = self._state.names or self._names()
        # RFC 3261 §16.6 step 8: our Via goes first, as the top one; step 4: our
        # Record-Route goes before the others (the header order of a list matters).
        position = names.index(canonical) if canonical in names else 0
        lines = self.lines
        return self._edited(
            (*lines[:position], line, *lines[position:]),
            (*names[:position], canonical, *names[position:]),
            canonical,
        )

    def with_header_last(self, name: str, value: str) -> Self:
        """A copy with a new line of that header after all the header lines.

        Raises:
            LocalSIPError: the name is not a token, or the value holds CR, LF or NUL.
        """
        line, canonical = _make_line(name, value)
        return self._edited(
            (*self.lines, line), (*(self._state.names or self._names()), canonical), canonical
        )

    def without_first_value(self, name: str) -> Self:
        """A copy without the first comma-separated value of that header.

        If the first line holds ``a, b`` it becomes ``Name: b`` (the name as it was
        spelled); if it held one value it goes. Without that header, the message itself.
        """
        canonical = _CANONICAL[name] if name in _CANONICAL else canonical_name(name)
        if canonical not in (self._state.names or self._names()):
            return self
        # RFC 3261 §16.7 step 3 (a response's top Via) and §16.4 (a Route naming us):
        # the first value goes, whether it shares its line with others or not.
        return self._first_value_replaced(canonical, ())

    def with_first_value_replaced(self, name: str, value: str) -> Self:
        """A copy whose first comma-separated value of that header is ``value``.

        ``Name: a, b`` becomes ``Name: value`` then ``Name: b`` (the name of the second
        line as it was spelled); ``Name: a`` becomes ``Name: value``. The same as
        ``without_first_value(name).with_header_first(name, value)``, in one edit.
        Without that header, the new line goes first, as `with_header_first` puts it.

        Raises:
            LocalSIPError: the name is not a token, or the value holds CR, LF or NUL.
        """
        line, canonical = _make_line(name, value)
        if canonical not in (self._state.names or self._names()):
            return self.with_header_first(name, value)
        # RFC 3261 §18.2.1, RFC 3581 §4: the top Via stamped with received and rport.
        return self._first_value_replaced(canonical, (line,))

    def _first_value_replaced(self, canonical: str, new: tuple[str, ...]) -> Self:
        # The first line of that header without its first value, `new` (lines) before it.
        names = self._state.names or self._names()
        position = names.index(canonical)
        lines = self.lines
        raw_name, _, raw_value = lines[position].partition(":")
        if "," in raw_value:  # else the value is alone on its line (the usual case)
            value = unfold(raw_value).strip(" \t")
            stop = _abnf.LIST_ELEMENT.match(value).end()  # type: ignore[union-attr]
            rest = value[stop + 1 :].strip(" \t")
            if rest:
                new += (raw_name.rstrip(" \t") + ": " + rest,)
        edited = self._edited(
            (*lines[:position], *new, *lines[position + 1 :]),
            (*names[:position], *(canonical,) * len(new), *names[position + 1 :]),
            canonical,
        )
        state = self._state
        if not new and canonical == "route" and state.route is not None:
            # RFC 3261 §16.4: a Route entry naming us popped; the others are as they were.
            edited._state.route = state.route[1:]
        wire = state.wire
        if not new and position == 0 and wire is not None:
            # The first line gone (a relayed response's top Via, RFC 3261 §16.7 step 3):
            # the bytes are the same bytes without it, cut out rather than joined again.
            # The wire's start line is the one _start_line writes (the grammar has one
            # SP between its parts).
            start = wire.index(b"\r\n") + 2
            line = lines[0]
            # Its CRLF ends the line, unless it is folded (RFC 3261 §7.3.1: a CRLF then
            # whitespace inside it).
            stop = start + len(_encode(line)) if "\r" in line else wire.index(b"\r\n", start)
            edited._state.wire = wire[:start] + wire[stop + 2 :]
        return edited

    def without_header(self, name: str) -> Self:
        """A copy without any line of that header."""
        canonical = canonical_name(name)
        names = self._state.names or self._names()
        if canonical not in names:
            return self
        kept = [n for n, line_name in enumerate(names) if line_name != canonical]
        lines = self.lines
        return self._edited(tuple(lines[n] for n in kept), tuple(names[n] for n in kept), canonical)

    def with_header_replaced(self, name: str, value: str) -> Self:
        """A copy whose first line of that header says ``value``; its other lines go.

        The new line is added last if the header is absent.

        Raises:
            LocalSIPError: the name is not a token, or the value holds CR, LF or NUL.
        """
        line, canonical = _make_line(name, value)
        names = self._state.names or self._names()
        if canonical not in names:
            return self._edited((*self.lines, line), (*names, canonical), canonical)
        position = names.index(canonical)
        lines = list(self.lines)
        new_names = names
        lines[position] = line
        if names.count(canonical) > 1:
            kept = [
                n for n, line_name in enumerate(names) if line_name != canonical or n == position
            ]
            lines = [lines[n] for n in kept]
            new_names = tuple(names[n] for n in kept)
        return self._edited(tuple(lines), new_names, canonical)

    def with_max_forwards(self, value: int) -> Self:
        """A copy with ``Max-Forwards: value`` (replaced, or added last).

        Raises:
            LocalSIPError: the value is outside 0..255.
        """
        # RFC 3261 §16.6 step 3: the proxy decrements it (or adds 70); §20.22 range.
        if not 0 <= value <= 255:
            raise LocalSIPError(f"Max-Forwards {value} outside 0..255")
        new = self.with_header_replaced("max-forwards", str(value))
        state = new._state
        state.max_forwards = value
        state.max_forwards_known = True
        return new

    def with_body(self, body: bytes, content_type: str | None = None) -> Self:
        """A copy with another body; Content-Length is set to its length.

        Args:
            body: the new body.
            content_type: if given, the Content-Type is set to it.
        """
        new = self.with_header_replaced("content-length", str(len(body)))
        if content_type is not None:
            new = new.with_header_replaced("content-type", content_type)
        _set(new, "body", body)
        new._state.content_length = len(body)
        return new


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Request(Message):
    """A SIP request (RFC 3261 §7.1).

    Attributes:
        method: the method as on the wire (case-sensitive, RFC 3261 §7.1).
        uri_raw: the Request-URI text as it came.
        version: the SIP-Version as it came ("SIP/2.0").
    """

    method: str
    uri_raw: str
    version: str = _abnf.SIP_2_0

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri_raw} ({len(self.body)} body bytes)>"

    def _start_line(self) -> str:
        return f"{self.method} {self.uri_raw} {self.version}"

    def _clone(self) -> Self:
        new = _new(type(self))
        _set(new, "method", self.method)
        _set(new, "uri_raw", self.uri_raw)
        _set(new, "version", self.version)
        _set(new, "body", self.body)
        return new

    @property
    def uri(self) -> URI:
        """The Request-URI, parsed on first access.

        Raises:
            ParseError: the Request-URI is not a valid URI.
        """
        state = self._state
        uri = state.uri
        if uri is None:
            uri = state.uri = uri_of(self.uri_raw)
        return uri

    def forwarded(
        self,
        *,
        via: str,
        max_forwards: int,
        record_route: Sequence[str] = (),
        top_via: str | None = None,
        content_length: bool = False,
    ) -> Request:
        """A copy with every edit a proxy makes to a request it forwards, in one go.

        The same message as ``with_first_value_replaced("via", top_via)`` (when given),
        ``with_max_forwards(max_forwards)``, ``with_header_first("record-route", v)``
        for each of `record_route` (last first, so that the first ends on top),
        ``with_body(body)`` (when `content_length`) and ``with_header_first("via",
        via)`` in this order, without the four or five copies between them.

        Args:
            via: our Via (RFC 3261 §16.6 step 8), on top.
            max_forwards: the Max-Forwards to send (step 3).
            record_route: our Record-Route entries, top first (step 4).
            top_via: the received top Via rewritten (received, rport: RFC 3261
                §18.2.1, RFC 3581 §4), or None to leave it as it is.
            content_length: write Content-Length (a stream needs it, §20.14).

        Raises:
            LocalSIPError: a value holds CR, LF or NUL, or Max-Forwards is outside 0..255.
        """
        if not 0 <= max_forwards <= 255:
            raise LocalSIPError(f"Max-Forwards {max_forwards} outside 0..255")
        for value in (via, *record_route, top_via or ""):
            if "\r" in value or "\n" in value or "\x00" in value:
                raise LocalSIPError(f"Header value with CR, LF or NUL: {value!r}")
        lines = list(self.lines)
        names = list(self._state.names or self._names())
        if top_via is not None:
            if "via" in names:
                position = names.index("via")
                new = ["Via: " + top_via]
                raw_name, _, raw_value = lines[position].partition(":")
                if "," in raw_value:  # "Via: a, b": a is replaced, b keeps its own line
                    value = unfold(raw_value).strip(" \t")
                    stop = _abnf.LIST_ELEMENT.match(value).end()  # type: ignore[union-attr]
                    rest = value[stop + 1 :].strip(" \t")
                    if rest:
                        new.append(raw_name.rstrip(" \t") + ": " + rest)
                lines[position : position + 1] = new
                names[position : position + 1] = ["via"] * len(new)
            else:
                lines.insert(0, "Via: " + top_via)
                names.insert(0, "via")
        _replace_line(lines, names, "max-forwards", f"Max-Forwards: {max_forwards}")
        if record_route:
            position = names.index("record-route") if "record-route" in names else 0
            lines[position:position] = ["Record-Route: " + value for value in record_route]
            names[position:position] = ["record-route"] * len(record_route)
        if content_length:
            _replace_line(lines, names, "content-length", f"Content-Length: {len(self.body)}")
        position = names.index("via") if "via" in names else 0
        lines[position:position] = ("Via: " + via,)
        names[position:position] = ("via",)
        # The cache: what no edit touched stays (see _edited), the rest is known.
        new_request = self._clone()
        _set(new_request, "lines", tuple(lines))
        state = _new(_State)
        state.__dict__ = kept = {
            **self._state.__dict__,
            **_FORWARD_RESET,
            "names": tuple(names),
            "max_forwards": max_forwards,
            "max_forwards_known": True,
        }
        if content_length:
            kept["content_length"] = len(self.body)
        _set(new_request, "_state", state)
        return new_request

    def with_uri(self, uri: URI | str) -> Request:
        """A copy with another Request-URI (RFC 3261 §16.5, §16.6 step 6).

        Raises:
            LocalSIPError: the text is empty or holds a space, a control character,
                ``<``, ``>`` or ``"``.
        """
        text = str(uri)
        # Whatever would break the Request-Line (§7.1) or inject another line.
        if _abnf.REQUEST_URI_RE.fullmatch(text) is None:
            raise LocalSIPError(f"Invalid Request-URI {text!r}")
        new = self._edited(self.lines, (self._state.names or self._names()), "")
        _set(new, "uri_raw", text)
        new._state.uri = uri if isinstance(uri, URI) else None
        return new


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Response(Message):
    """A SIP response (RFC 3261 §7.2).

    Attributes:
        status: the status code, 100..699.
        reason: the reason phrase, maybe empty.
        version: the SIP-Version as it came ("SIP/2.0").
    """

    status: int
    reason: str = ""
    version: str = _abnf.SIP_2_0

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} ({len(self.body)} body bytes)>"

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def _clone(self) -> Self:
        new = _new(type(self))
        _set(new, "status", self.status)
        _set(new, "reason", self.reason)
        _set(new, "version", self.version)
        _set(new, "body", self.body)
        return new


# -- checks shared with the parser ------------------------------------------------------


def check_call_id(value: str) -> str:
    """Check a Call-ID value (RFC 3261 §25.1 callid); returns it.

    Raises:
        ParseError: it is empty or not ``word [ "@" word ]``.
    """
    if _abnf.CALLID.fullmatch(value) is None:
        raise ParseError("Bad Call-ID: empty" if not value else f"Bad Call-ID {show(value)}")
    return value


def check_max_forwards(value: str) -> int:
    """Check a Max-Forwards value (RFC 3261 §20.22, 0..255).

    Raises:
        ParseError: it is not a number in 0..255.
    """
    if _abnf.DIGITS.fullmatch(value) is None or int(value) > 255:
        raise ParseError(f"Bad Max-Forwards {show(value)}")
    return int(value)


def check_content_length(value: str) -> int:
    """Check a Content-Length value (RFC 3261 §20.14: 1*DIGIT).

    Raises:
        ParseError: it is not a non-negative number.
    """
    if _abnf.DIGITS.fullmatch(value) is None:
        raise ParseError(f"Bad Content-Length {show(value)}")
    return int(value)
