"""The acceptance rule: what a received message must satisfy before anyone reads it.

Theory of operation
-------------------
The parser checks eagerly only what every message needs for transaction matching (the
start line, the top Via, From, To, Call-ID, CSeq, Max-Forwards of a request,
Content-Length) and leaves the rest to be parsed on first read. Before this check, a
message could be accepted and then raise when the proxy first read one of those other
fields: a bad or empty second Via (loop detection reads them all), a bad Route
(forwarding reads it), a bad Request-URI, or a header of bytes that are not UTF-8 that
the proxy re-encodes as strict UTF-8 (a UnicodeEncodeError, not even a ParseError).

`check_message` is the one rule that closes that gap. It reads every field the proxy
core may read, so that on a message that passed, none of them can raise again. What the
proxy reads for every request (the Request-URI, every Via, the Route set) is parsed and
cached on the message, so reading it here moves its cost rather than adding it; the
URIs the core never reads (Contact, Record-Route, From, To) are only matched against the
grammar, which is cheaper than building them. Both remember the URI texts they passed
(`_uri.uri_of`, `_uri.check_uri`): the messages of a dialog carry the same From, To,
Contact, Route and Request-URI, each then read once per dialog, not once per message:

* every Via element of every Via line (host, port, branch, received, rport, maddr, ttl);
* Route and Record-Route (``<>`` required) and Contact (or a lone ``*``), with the URI
  of each entry; From and To with their URIs; Call-ID, CSeq, Max-Forwards (a response's
  too), Content-Length; a request's Request-URI;
* those headers are UTF-8 (RFC 3261 §7.3.1, §25.1). Other headers may hold any bytes:
  they are carried byte for byte through parsing, edits and serialization (all of
  ``triosip.sip`` encodes with ``surrogateescape``), since a proxy only forwards them.

The transport calls it on every message it receives, right after parsing; a message
that fails it takes the parse-error path: a request is answered 400 with the reason
(`build_error_response`, the error carries the lines it needs), a response is dropped
and counted. It is separate from `parse_message` so that the parser stays a lazy
reader for bytes that do not come from the network (a message the proxy builds and
parses again, a test that inspects a broken field).

On the parser's fast path (a header section of plain ``long-name:`` lines, no folds,
all ASCII: nearly every message) the parser runs the same rule itself, in the same
pass, with the values it has already cut out (`accept_parsed`): nothing there goes
through the generic accessors. What passes is marked on the message, and
`check_message` then returns at once. What does not pass is left unmarked and unraised
(the parser stays lazy): `check_message` reads it again the slow way and raises the
error that names the problem, so a refused message is answered exactly as before.
There, what the proxy only carries is checked and not built (a response's Vias, the
Record-Route and Contact entries), and the lines that are the same in every message of
a dialog (From, To and Call-ID in the parser; Route, Record-Route, Contact here) are
matched once while the dialog is in use: what passed is remembered, in bounded memos
that a sender cannot grow (as the URIs are).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Final

from triosip.sip import _abnf
from triosip.sip._fields import first_via, parse_addresses, parse_vias
from triosip.sip._headers import header_lines_named
from triosip.sip._message import Request, Response, check_max_forwards
from triosip.sip._parse_error import ParseError
from triosip.sip._uri import check_uri, uri_of

if TYPE_CHECKING:
    import re
    from collections.abc import Iterable

    from triosip.sip._fields import NameAddr

# The headers the proxy core reads as text (and may re-encode as UTF-8), with the label
# that names them in a reason phrase.
_TEXT_HEADERS: Final = {
    "via": "Via",
    "from": "From",
    "to": "To",
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "route": "Route",
    "record-route": "Record-Route",
    "contact": "Contact",
    "max-forwards": "Max-Forwards",
    "content-length": "Content-Length",
    "proxy-require": "Proxy-Require",
}


def check_message(message: Request | Response) -> None:
    """Check every field of a received message that a proxy may read (see above).

    A pure function: it reads the message's fields (which caches them) and changes
    nothing else. After it returns, reading `Message.via`, ``top_via``, ``route``,
    ``record_route``, ``contact``, ``from_``, ``to`` (and the ``uri`` of each of
    these addresses), ``cseq``, ``call_id``, ``max_forwards``, ``content_length`` and
    `Request.uri` does not raise, and neither do the proxy's edits of it.

    Args:
        message: a message `parse_message` or `StreamParser` returned.

    Raises:
        ParseError: a field is malformed (status 400, the reason names it), completed
            like a parser's error with what `build_error_response` needs to answer it.
    """
    if message._state.accepted:  # the parser ran this rule already (accept_parsed)
        return
    try:
        _check(message)
    except ParseError as error:
        # What answering needs, as the parser gives it (RFC 3261 §8.2.6.2): the top Via,
        # From, To, Call-ID and CSeq were checked by the parser, so a request is
        # answerable unless it is an ACK.
        if isinstance(message, Request):
            error.is_request = True
            error.method = message.method
        else:
            error.is_request = False
        error.answer = header_lines_named(message.lines, message._names())
        raise


def _check(message: Request | Response) -> None:
    lines = message.lines
    names = message._names()
    # Only a message with bytes above 0x7F can hold any that are not UTF-8.
    if not "".join(lines).isascii():
        for line, name in zip(lines, names, strict=True):
            label = _TEXT_HEADERS.get(name)
            if label is not None and not line.isascii():
                try:
                    line.encode("utf-8")
                except UnicodeEncodeError:
                    raise ParseError(f"Bad {label} header: not UTF-8") from None
    # RFC 3261 §16.3 step 4 reads every Via (the top one the parser checked).
    if names.count("via") > 1 or "," in lines[names.index("via")]:
        _ = message.via
    # The Request-URI and the Route set are read for every request a proxy forwards:
    # built (and cached) here. The other addresses' URIs are only matched against the
    # grammar, which is cheaper: reading one later builds it and cannot fail.
    if isinstance(message, Request):
        try:
            _ = message.uri
        except ParseError as error:
            raise ParseError(f"Bad Request-URI: {error.reason}") from None
    if "route" in names:
        _uris(message.route, "Route", built=True)
    if "record-route" in names:
        _uris(message.record_route, "Record-Route", built=False)
    if "contact" in names:
        _uris(message.contact, "Contact", built=False)
    _uris((message.from_,), "From", built=False)
    _uris((message.to,), "To", built=False)
    _ = message.max_forwards  # a request's was checked by the parser; a response's not


def _uris(addresses: Iterable[NameAddr], label: str, *, built: bool) -> None:
    # The URI of each address: built (and cached), or only matched against the grammar.
    for address in addresses:
        try:
            if built:
                _ = address.uri
            else:
                check_uri(address.uri_text)
        except ParseError as error:
            raise ParseError(f"Bad {label} header: {error.reason}") from None


_VIA_LINES: Final = _abnf.VIA_LINES.fullmatch
_ROUTE_VALUE: Final = _abnf.ROUTE_VALUE
_ADDRESS_VALUE: Final = _abnf.ADDRESS_VALUE


def accept_parsed(
    message: Request | Response,
    names: list[str],
    lines: list[str],
    first: dict[str, int],
    last: dict[str, int],
    *,
    uris_ok: bool,
    request: bool,
) -> None:
    """`check_message`'s rule, run by the parser on its fast path; marks what passes.

    The same reads in the same order as `_check`, on lines the fast path vouches for:
    each is ``name:value`` with ``name`` its canonical name, no fold, no CR, LF or NUL,
    all ASCII (so UTF-8). A value is then the line after ``name:``, stripped. What the
    reads build is cached on the message as the accessors would cache it. On the first
    failure it stops without a word: `check_message` will say what is wrong.

    Args:
        message: the message just parsed (its cache holds the parser's checked fields).
        names: the canonical name of each header line.
        lines: the header lines.
        first: each name of `names`, mapped to the number of its first line.
        last: the same, mapped to its last line's number (`first` itself when no
            name is repeated).
        uris_ok: whether the URIs of From and To passed (the parser checks them with
            the rest of From, To and Call-ID, once per dialog).
        request: whether the message is a request.
    """
    if not uris_ok:
        return
    state = message._state
    try:
        # RFC 3261 §16.3 step 4 reads every Via (the top one the parser checked).
        n = first["via"]
        if "," not in lines[n] and last["via"] == n:
            if request:  # the top one alone, which loop detection reads all the same
                state.vias = (message.top_via,)
        elif request:
            top = message.top_via
            values = _values(names, lines, first, last, "via")
            rest = None if values[0] == top.text else first_via(values[0])[2]
            others = parse_vias(([rest] if rest is not None else []) + values[1:])
            state.vias = (top, *others)
        else:
            # A response's Vias are only checked: the proxy pops the top one and reads
            # the others only to relay a stray 2xx (which parses them, and cannot fail).
            # The parser checked the first via-parm; alone on its line, it is skipped.
            values = _values(names, lines, first, last, "via")
            if _VIA_LINES("\r".join(values if "," in lines[n] else values[1:])) is None:
                return
        if request:
            state.uri = uri_of(message.uri_raw)  # type: ignore[union-attr]
        # The lines below are the same in every message of a dialog (the Route set,
        # the Contact of each side): what passed is remembered, line by line.
        if "route" in first:
            route: tuple[NameAddr, ...] = ()
            n = first["route"]
            for value in (
                (lines[n][6:].strip(" \t"),)
                if last["route"] == n
                else _values(names, lines, first, last, "route")
            ):
                # (a slice, not len(): empty when the value is short enough to remember)
                route += _route(value) if value[_LINE_CACHED_MAX:] else _route_of(value)
            state.route = route
        else:
            state.route = ()  # what the accessor gives: read by every request's routing
        # Record-Route and Contact are checked, not built: the proxy carries them.
        if "record-route" in first:
            n = first["record-route"]
            for value in (
                (lines[n][13:].strip(" \t"),)
                if last["record-route"] == n
                else _values(names, lines, first, last, "record-route")
            ):
                if not (
                    _record_route_passes.__wrapped__(value)
                    if value[_LINE_CACHED_MAX:]
                    else _record_route_passes(value)
                ):
                    return
        if "contact" in first:
            n = first["contact"]
            values = (
                [lines[n][8:].strip(" \t")]
                if last["contact"] == n
                else _values(names, lines, first, last, "contact")
            )
            # RFC 3261 §10.2.2: "Contact: *" (alone) removes every binding of a REGISTER.
            if len(values) != 1 or values[0] != "*":
                for value in values:
                    if not (
                        _contact_passes.__wrapped__(value)
                        if value[_LINE_CACHED_MAX:]
                        else _contact_passes(value)
                    ):
                        return
        if not state.max_forwards_known:  # a response's (P3 of the parser)
            if "max-forwards" in first:
                n = first["max-forwards"]
                if last["max-forwards"] != n:
                    return
                value = lines[n][13:].strip(" \t")
                state.max_forwards = (
                    _SMALL_NUMBERS[value]
                    if value in _MAX_FORWARDS_TEXTS
                    else check_max_forwards(value)
                )
            else:
                state.max_forwards = None
            state.max_forwards_known = True
    except ParseError:
        return
    state.accepted = True


# "0".."255" and their values: a Max-Forwards (or a short Content-Length) read without a
# call; any other text (leading zeros, larger numbers) goes through the full check.
_SMALL_NUMBERS: Final = {str(number): number for number in range(1500)}
_MAX_FORWARDS_TEXTS: Final = frozenset(str(number) for number in range(256))


# How many line values the memos below remember, and the longest: a bound on their
# memory that no sender can raise.
_LINES_CACHED = 2048
_LINE_CACHED_MAX = 512


def _route(value: str) -> tuple[NameAddr, ...]:
    # The Route entries of one line, their URIs built (the proxy routes on them).
    route = parse_addresses([value], header="Route", brackets=True)
    for entry in route:
        _ = entry.uri
    return route


# Shared between the messages that hold the same line: a NameAddr is a value (frozen; what
# it caches is a pure function of its text), as the URIs of _uri.uri_of are. A ParseError
# is raised each time, never remembered.
_route_of = functools.lru_cache(maxsize=_LINES_CACHED)(_route)


def _addresses_pass(value: str, pattern: re.Pattern[str], *, brackets: bool) -> bool:
    # Whether the addresses of one line and their URIs pass; built only when the line
    # holds several.
    try:
        if "," in value:
            for entry in parse_addresses([value], header="", brackets=brackets):
                check_uri(entry.uri_text)
            return True
        m = pattern.fullmatch(value)
        if m is None:
            return False
        check_uri(m.group("uri") or m.group("bare") or "")
    except ParseError:
        return False
    return True


@functools.lru_cache(maxsize=_LINES_CACHED)
def _record_route_passes(value: str) -> bool:
    return _addresses_pass(value, _ROUTE_VALUE, brackets=True)


@functools.lru_cache(maxsize=_LINES_CACHED)
def _contact_passes(value: str) -> bool:
    return _addresses_pass(value, _ADDRESS_VALUE, brackets=False)


def _values(
    names: list[str], lines: list[str], first: dict[str, int], last: dict[str, int], name: str
) -> list[str]:
    # Each line's value: after "name:" (the fast path has no space before the colon).
    skip = len(name) + 1
    n = first[name]
    end = last[name] + 1
    if end == n + 1:  # one line (the usual case)
        return [lines[n][skip:].strip(" \t")]
    return [
        line[skip:].strip(" \t")
        for line, line_name in zip(lines[n:end], names[n:end], strict=True)
        if line_name == name
    ]
