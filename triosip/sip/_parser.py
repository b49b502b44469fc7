"""Reading untrusted bytes: parse_message for a datagram, StreamParser for TCP.

Theory of operation
-------------------
Every message a proxy receives is read for transaction matching (RFC 3261 §17.2.3):
the top Via's branch and sent-by, Call-ID, CSeq, From tag, To tag. So those fields are
checked here, eagerly, and everything else waits until someone asks (``_message.py``).
On CPython a function call or an attribute store costs about what the regex engine
spends on tens of characters, so the parser is built to make few of them:

1. Fast path (`_parse`). Find the blank line that ends the header section, decode the
   section once (UTF-8, ``surrogateescape``: never fails, and encodes back to the same
   bytes), split it into lines, and find every line's name with one ``findall`` over a
   lower-cased copy (`_abnf.FAST_NAMES`). If each line is ``long-name:`` (no fold, no
   compact form, no space before the colon) and there is no stray CR, LF or NUL, the
   counts agree. Two dicts built in C from the names say where each name's first and
   last lines are: no header is looked for with a scan, and a header that may appear
   once does when its first and last lines are the same. The start line and the first
   value of Via, From, To, Call-ID and CSeq are then checked by a ``fullmatch`` of
   `_abnf.EAGER` (start line, Via, CSeq) and one of `_abnf.DIALOG` (From, To, Call-ID:
   the same texts in every message of a dialog, so their parts are remembered,
   `_dialog_parts`), whose groups become the parts of the Via, NameAddr and CSeq values
   that the accessors hand out; Max-Forwards and Content-Length are plain digits. The
   acceptance rule of ``_check.py`` runs on the other lines the proxy reads
   (`accept_parsed`); the rest are not read at all.
2. Careful path (`_parse_carefully`). Anything the fast path does not accept goes here
   and is read again line by line: folds joined, compact forms expanded, each field
   checked on its own with the same grammar. It either accepts what the fast path
   refused for being unusual (a fold, ``v:``, ``To :``) or raises the `ParseError` that
   names the problem. It is the reference: for any message both accept, both must give
   the same result (tests/sip/test_properties.py checks it).

A `ParseError` is completed at the entry point with what answering it needs (the Via,
From, To, Call-ID and CSeq lines, whether it was a request, the method). Nothing else
may escape: every int() reads at most ten ASCII digits, and every index is checked.

Leniencies, beyond those of ``_abnf.py``:

* P1 — CRLFs before the start line are skipped (RFC 3261 §7.5 asks for it) and counted
  by StreamParser as keep-alives (RFC 5626 §4.4.1).
* P2 — a datagram's bytes after its Content-Length worth of body are discarded (RFC
  3261 §18.3); a datagram without Content-Length has the rest as its body.
* P3 — Max-Forwards is checked on requests only; on a response it is checked when read.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Final, NoReturn

from triosip.sip import _abnf
from triosip.sip._check import _MAX_FORWARDS_TEXTS, _SMALL_NUMBERS, accept_parsed
from triosip.sip._fields import check_address, check_cseq, first_via
from triosip.sip._headers import COMPACT_FORMS, header_lines_named
from triosip.sip._message import (
    Request,
    Response,
    _State,
    check_call_id,
    check_content_length,
    check_max_forwards,
)
from triosip.sip._parse_error import ParseError
from triosip.sip._text import show, unfold, unfold_bytes
from triosip.sip._uri import check_uri

if TYPE_CHECKING:
    from triosip.sip._fields import AddressParts

DEFAULT_MAX_SIZE: Final = 65535
_CRLF: Final = b"\r\n"
_BLANK_LINE: Final = b"\r\n\r\n"
_SIP_2_0: Final = _abnf.SIP_2_0

_new = object.__new__
_set = object.__setattr__
_FAST_NAMES = _abnf.FAST_NAMES.findall
_EAGER = _abnf.EAGER.fullmatch
_DIALOG = _abnf.DIALOG.fullmatch
_ADDR_URI = _abnf.ADDR_URI
_ADDR_BARE = _abnf.ADDR_BARE
_G_METHOD = _abnf.G_METHOD
_G_URI = _abnf.G_URI
_G_REQUEST_VERSION = _abnf.G_REQUEST_VERSION
_G_STATUS_VERSION = _abnf.G_STATUS_VERSION
_G_STATUS = _abnf.G_STATUS
_G_REASON = _abnf.G_REASON
_G_VIA = _abnf.G_VIA
_G_VIA_PARTS = _abnf.G_VIA_PARTS
_G_FROM_PARTS = _abnf.G_FROM_PARTS
_G_TO_PARTS = _abnf.G_TO_PARTS
_G_CSEQ_NUMBER = _abnf.G_CSEQ_NUMBER
_G_CSEQ_METHOD = _abnf.G_CSEQ_METHOD
_UNSOUND = _abnf.UNSOUND


def parse_message(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Request | Response:
    """Parse one datagram into a message (RFC 3261 §7, §18.3).

    Leading CRLFs are skipped; bytes after the body (Content-Length) are discarded; a
    datagram without Content-Length has the rest of it as its body.

    Args:
        data: the datagram.
        max_size: the largest message accepted, in bytes.

    Returns:
        The request or response.

    Raises:
        ParseError: the datagram is not a SIP message we accept; its ``status``,
            ``reason`` and ``answer`` say how to answer it (`build_error_response`).
    """
    return _parse(data, stream=False, max_size=max_size)


def _parse(data: bytes, *, stream: bool, max_size: int) -> Request | Response:
    # `stream`: data is exactly one message framed by StreamParser (Content-Length known).
    # The fast path (see the top); anything unusual or wrong goes to _parse_carefully.
    size = len(data)
    if size > max_size:
        raise ParseError(f"Message of {size} bytes is too large", status=413)
    start = 0
    if data[:2] == _CRLF:  # P1
        while data.startswith(_CRLF, start):
            start += 2
    end = data.find(_BLANK_LINE, start)
    if end < 0:
        if start >= size:
            raise ParseError("Empty message")
        raise ParseError(
            "No blank line after the header section", is_request=_looks_like_request(data)
        )
    head = data[start:end].decode("utf-8", "surrogateescape")
    lines = head.split("\r\n")
    # The name of each line, when every line is "long-name:" (lower-cased); one per line
    # and no stray CR, LF or NUL, or we are not on the fast path.
    names: list[str] = _FAST_NAMES(head.lower())
    count = len(names)
    if (
        count + 1 != len(lines)
        or head.count("\n") != count
        or head.count("\r") != count
        or "\x00" in head
    ):
        return _parse_carefully(data, start, end, head, stream=stream)
    start_line = lines[0]
    del lines[0]
    # The number of the first and of the last line of each name: two dicts built in C,
    # which answer "is it there, where, and is it repeated" without a scan per header.
    first = dict(zip(reversed(names), range(count - 1, -1, -1), strict=True))
    last = first if len(first) == count else dict(zip(names, range(count), strict=True))
    try:
        # RFC 3261 §8.1.1: these five are in every message; the four of them once only
        # (§7.3.1: only list headers may repeat). Missing: KeyError, careful path.
        n_via = first["via"]
        n_from = first["from"]
        n_to = first["to"]
        n_call_id = first["call-id"]
        n_cseq = first["cseq"]
    except KeyError:
        return _parse_carefully(data, start, end, head, stream=stream)
    if last is not first and (
        # Some header repeats: fine for a list header (Via, Route...), not for these.
        last["from"] != n_from
        or last["to"] != n_to
        or last["call-id"] != n_call_id
        or last["cseq"] != n_cseq
        or ("content-length" in first and last["content-length"] != first["content-length"])
        or ("max-forwards" in first and last["max-forwards"] != first["max-forwards"])
    ):
        return _parse_carefully(data, start, end, head, stream=stream)
    # Each value starts right after "name:" on the fast path; two patterns check the
    # start line and the five (see _abnf.EAGER).
    from_ = lines[n_from][5:].strip(" \t")
    to = lines[n_to][3:].strip(" \t")
    call_id = lines[n_call_id][8:].strip(" \t")
    m = _EAGER(
        "\r".join((start_line, lines[n_via][4:].strip(" \t"), lines[n_cseq][5:].strip(" \t")))
    )
    if m is None:
        return _parse_carefully(data, start, end, head, stream=stream)
    dialog = "\r".join((from_, to, call_id))
    addresses = (
        _dialog_parts.__wrapped__(dialog)
        if dialog[_DIALOG_CACHED_MAX:]  # (a slice, not len(): empty when short enough)
        else _dialog_parts(dialog)
    )
    if addresses is None:
        return _parse_carefully(data, start, end, head, stream=stream)
    g = m.groups()
    number = g[_G_CSEQ_NUMBER]
    # RFC 3261 §8.1.1.5: < 2**31 (the pattern takes at most 10 digits).
    if number[9:] and number > "2147483647":
        return _parse_carefully(data, start, end, head, stream=stream)
    message: Request | Response
    method = g[_G_METHOD]
    max_forwards: int | None = None
    if method is not None:  # the start line was a Request-Line
        version = g[_G_REQUEST_VERSION]
        if (version != _SIP_2_0 and version.upper() != _SIP_2_0) or g[_G_CSEQ_METHOD] != method:
            # L5, and RFC 3261 §8.1.1.5: the CSeq method is the request's
            return _parse_carefully(data, start, end, head, stream=stream)
        if "max-forwards" in first:
            value = lines[first["max-forwards"]][13:].strip(" \t")
            if value in _MAX_FORWARDS_TEXTS:  # "0".."255": the usual text, read without a call
                max_forwards = _SMALL_NUMBERS[value]
            else:
                if not (value.isdigit() and value.isascii() and len(value) <= 3):
                    return _parse_carefully(data, start, end, head, stream=stream)
                max_forwards = int(value)
                if max_forwards > 255:
                    return _parse_carefully(data, start, end, head, stream=stream)
        message = _new(Request)
        _set(message, "method", method)
        _set(message, "uri_raw", g[_G_URI])
    else:
        version = g[_G_STATUS_VERSION]
        if version != _SIP_2_0 and version.upper() != _SIP_2_0:  # L5
            return _parse_carefully(data, start, end, head, stream=stream)
        message = _new(Response)
        _set(message, "status", int(g[_G_STATUS]))
        _set(message, "reason", g[_G_REASON])
    body_start = end + 4
    if "content-length" in first:
        value = lines[first["content-length"]][15:].strip(" \t")
        if value in _SMALL_NUMBERS:
            body_end = body_start + _SMALL_NUMBERS[value]
        elif value.isdigit() and value.isascii() and len(value) <= 10:
            body_end = body_start + int(value)
        else:
            return _parse_carefully(data, start, end, head, stream=stream)
        if body_end > size:
            return _parse_carefully(data, start, end, head, stream=stream)
    elif stream:
        return _parse_carefully(data, start, end, head, stream=stream)
    else:
        body_end = size  # P2
    # The cache, in one go (see _message._State; its attributes default to "not yet").
    state = _new(_State)
    state.__dict__ = {
        # A tuple of str, which the garbage collector stops tracking (a list it would walk
        # for as long as a transaction keeps the message).
        "names": tuple(names),
        "wire": data if start == 0 and body_end == size else data[start:body_end],
        "via_p": (g[_G_VIA], g[_G_VIA_PARTS]),
        "from_p": (from_, addresses[0]),
        "to_p": (to, addresses[1]),
        "call_id": call_id,
        "cseq_p": (number, g[_G_CSEQ_METHOD]),
        "content_length": body_end - body_start,
        "max_forwards": max_forwards,
        "max_forwards_known": method is not None,  # P3
    }
    _set(message, "version", version)
    _set(message, "lines", tuple(lines))
    _set(message, "body", data[body_start:body_end])
    _set(message, "_state", state)
    if head.isascii():  # O(1) on a str; else check_message reads it line by line
        accept_parsed(
            message, names, lines, first, last, uris_ok=addresses[2], request=method is not None
        )
    return message


# How many From / To / Call-ID texts _dialog_parts remembers, and the longest: a bound on
# its memory that no sender can raise (the texts of a dialog are a few hundred bytes).
_DIALOGS_CACHED = 2048
_DIALOG_CACHED_MAX = 512


@functools.lru_cache(maxsize=_DIALOGS_CACHED)
def _dialog_parts(text: str) -> tuple[AddressParts, AddressParts, bool] | None:
    # The parts of From and To, and whether their URIs pass (check_message's rule), or
    # None when From, To or Call-ID (joined by CR) is not what _abnf.DIALOG accepts. The
    # messages of a dialog carry the same three texts: each is matched once while the
    # dialog is in use, not once per message.
    m = _DIALOG(text)
    if m is None:
        return None
    g = m.groups()
    from_parts = g[_G_FROM_PARTS]
    to_parts = g[_G_TO_PARTS]
    try:
        for parts in (from_parts, to_parts):
            check_uri(parts[_ADDR_URI] or parts[_ADDR_BARE] or "")
    except ParseError:
        return from_parts, to_parts, False
    return from_parts, to_parts, True


def _looks_like_request(data: bytes) -> bool | None:
    start_line = data.split(_CRLF, 1)[0].decode("utf-8", "surrogateescape")
    if start_line[:4].upper() == "SIP/":
        return False
    return True if _abnf.REQUEST_START.match(start_line) else None


def _parse_carefully(
    data: bytes, start: int, end: int, head: str, *, stream: bool
) -> Request | Response:
    # The reference reading, line by line; see "Careful path" at the top.
    start_line, _, section = head.partition("\r\n")
    try:
        lines, names, folded = _split_carefully(section, start_line)
        message: Request | Response
        if start_line[:4].upper() == "SIP/":
            message = _response(start_line)
        else:
            message = _request(start_line)
        state = _check_headers(message, lines, names, folded=folded)
        body_start = end + 4
        length = state.content_length
        if length is None:
            if stream:
                # StreamParser frames by Content-Length, so this cannot be reached.
                raise ParseError("Missing Content-Length", fatal=True)
            body_end = len(data)  # P2
            state.content_length = body_end - body_start
        else:
            body_end = body_start + length
            if body_end > len(data):
                raise ParseError(
                    f"Content-Length {length} is larger than the {len(data) - body_start} "
                    "body bytes received"
                )
    except ParseError as exc:
        _complete(exc, start_line, section)
        raise
    state.wire = data if start == 0 and body_end == len(data) else data[start:body_end]
    _set(message, "lines", tuple(lines))
    _set(message, "body", data[body_start:body_end])
    _set(message, "_state", state)
    return message


def _logical_lines(section: str) -> list[str]:
    # The header section cut at each CRLF that no SP/HT follows: one item per header line,
    # its folds kept in it (RFC 3261 §7.3.1). One pass in C: joining the folded lines one
    # by one copied the line again for each fold, quadratic in a value folded 20,000 times.
    return _abnf.LINE_BREAK.split(section) if section else []


def _complete(error: ParseError, start_line: str, section: str) -> None:
    # Add to an error what answering it needs, reading the lines as tolerantly as can be.
    if start_line[:4].upper() == "SIP/":
        error.is_request = False
    elif _abnf.REQUEST_START.match(start_line):
        error.is_request = True
        error.method = start_line.partition(" ")[0]
    # Only lines that could be sent back as they are: no NUL, no stray CR or LF.
    sound = [
        line
        for line in _logical_lines(section)
        if not _UNSOUND.search(line.replace("\r\n", "")) and line[:1] not in (" ", "\t")
    ]
    names = []
    for line in sound:
        lowered = line.partition(":")[0].rstrip(" \t").lower()
        names.append(COMPACT_FORMS.get(lowered, lowered))
    error.answer = header_lines_named(sound, names)


def _request(start_line: str) -> Request:
    m = _abnf.REQUEST_LINE.fullmatch(start_line)
    if m is None:
        raise ParseError(_bad_request_line(start_line))
    method, uri, version = m.group("method", "uri", "version")
    if version.upper() != _SIP_2_0:  # L5
        raise ParseError(f"SIP version {show(version)} not supported", status=505)
    request: Request = _new(Request)
    _set(request, "method", method)
    _set(request, "uri_raw", uri)
    _set(request, "version", version)
    return request


def _bad_request_line(start_line: str) -> str:
    # Only on the error path: say what is wrong with the request line.
    if not start_line:
        return "Empty request line"
    if "\x00" in start_line:
        return "NUL byte in the start line"
    parts = start_line.split(" ")
    if "" in parts or start_line != start_line.strip():
        return "Bad request line: extra spaces"
    if "<" in start_line or ">" in start_line:
        return "Bad request line: <> around the Request-URI"
    if len(parts) > 3:
        return "Bad request line: spaces inside the Request-URI"
    if len(parts) < 3:
        return "Bad request line: expected Method SP Request-URI SP SIP-Version"
    method, uri, version = parts
    if _abnf.HEADER_NAME.fullmatch(method) is None:
        return f"Bad request line: method {show(method)} is not a token"
    if _abnf.SIP_VERSION_RE.fullmatch(version) is None:
        return f"Bad request line: version {show(version)}"
    return f"Bad request line: Request-URI {show(uri)}"


def _response(start_line: str) -> Response:
    m = _abnf.STATUS_LINE.fullmatch(start_line)
    if m is None:
        raise ParseError(f"Bad status line {show(start_line)}")
    version, status, reason = m.group("version", "status", "reason")
    if version.upper() != _SIP_2_0:  # L5
        raise ParseError(f"SIP version {show(version)} not supported", status=505)
    response: Response = _new(Response)
    _set(response, "status", int(status))
    _set(response, "reason", reason)
    _set(response, "version", version)
    return response


def _split_carefully(section: str, start_line: str) -> tuple[list[str], list[str], bool]:
    """Header lines one by one: folds joined, compact forms expanded, errors named.

    Args:
        section: the header lines, CRLF-separated, after the start line.
        start_line: the start line.

    Returns:
        The logical lines (folds kept in them), their canonical names, and whether any
        line was folded.
    """
    if "\x00" in start_line:
        raise ParseError("NUL byte in the start line")
    if "\r" in start_line or "\n" in start_line:
        raise ParseError("Bare CR or LF in the start line")
    if "\x00" in section:
        raise ParseError("NUL byte in a header line")
    crlfs = section.count("\r\n")
    if section.count("\r") != crlfs or section.count("\n") != crlfs:
        raise ParseError("Bare CR or LF in a header line")
    if section[:1] in (" ", "\t"):
        raise ParseError("Header section starts with a folded line")
    # RFC 3261 §7.3.1: a line starting with whitespace continues the one above.
    logical = _logical_lines(section)
    folded = "\r\n " in section or "\r\n\t" in section
    names: list[str] = []
    for line in logical:
        name, colon, _ = line.partition(":")
        if not colon:
            raise ParseError(f"Header line without a colon: {show(line)}")
        name = name.rstrip(" \t")  # HCOLON = *( SP / HTAB ) ":" SWS
        if _abnf.HEADER_NAME.fullmatch(name) is None:
            raise ParseError(f"Bad header name {show(name)}")
        lowered = name.lower()
        names.append(COMPACT_FORMS.get(lowered, lowered))
    return logical, names, folded


def _value(line: str, folded: bool) -> str:
    value = line.partition(":")[2]
    if folded:
        value = unfold(value)
    return value.strip(" \t")


def _single(names: list[str], name: str, label: str) -> int:
    # The line number of a header that must appear at most once; -1 when absent.
    count = names.count(name)
    if count == 1:
        return names.index(name)
    if count == 0:
        return -1
    raise ParseError(f"Several {label} header lines")


def _check_headers(
    message: Request | Response, lines: list[str], names: list[str], *, folded: bool
) -> _State:
    # RFC 3261 §8.1.1 / §8.2: the fields every message needs, one by one. Fills in the
    # same groups as the fast path's pattern, so the accessors read both the same way.
    state = _State()
    state.names = tuple(names)
    if "via" not in names:
        raise ParseError("Missing Via")
    text, parts, _ = first_via(_value(lines[names.index("via")], folded))
    state.via_p = (text, parts)

    n = _single(names, "from", "From")
    if n < 0:
        raise ParseError("Missing From")
    value = _value(lines[n], folded)
    state.from_p = (value, check_address(value, "From"))

    n = _single(names, "to", "To")
    if n < 0:
        raise ParseError("Missing To")
    value = _value(lines[n], folded)
    state.to_p = (value, check_address(value, "To"))

    n = _single(names, "call-id", "Call-ID")
    if n < 0:
        raise ParseError("Missing Call-ID")
    state.call_id = check_call_id(_value(lines[n], folded))

    n = _single(names, "cseq", "CSeq")
    if n < 0:
        raise ParseError("Missing CSeq")
    _, method = state.cseq_p = check_cseq(_value(lines[n], folded))

    n = _single(names, "content-length", "Content-Length")
    if n >= 0:
        state.content_length = check_content_length(_value(lines[n], folded))

    if isinstance(message, Request):
        # RFC 3261 §8.1.1.5: the CSeq method matches the request's.
        if method != message.method:
            raise ParseError("CSeq method does not match the request method")
        n = _single(names, "max-forwards", "Max-Forwards")
        if n >= 0:
            state.max_forwards = check_max_forwards(_value(lines[n], folded))
        state.max_forwards_known = True  # P3: a response's is checked when read
    return state


class StreamParser:
    """Frames messages out of a byte stream by Content-Length (RFC 3261 §18.3).

    Feed it what the connection receives; take messages out with `next_message`. CRLFs
    between messages are keep-alives (RFC 5626 §4.4.1) and are skipped and counted: a
    double CRLF is a ping the transport must answer with a single CRLF (`take_pings`).

    Attributes:
        keepalives: the number of keep-alives skipped: each CRLFCRLF ping, and each
            lone CRLF (a pong, or any stray CRLF) before a message.
    """

    def __init__(self, *, max_size: int = DEFAULT_MAX_SIZE) -> None:
        """Create a parser for one connection.

        Args:
            max_size: the largest message accepted (header section and body), in bytes.
        """
        self._buffer = bytearray()
        self._max_size = max_size
        self._searched = 0  # where the search for the blank line resumes
        self._total = -1  # the length of the message being received, once known
        self._crlfs = 0  # CRLFs seen since the last message or ping
        self._pings = 0
        self._error: ParseError | None = None
        self.keepalives = 0

    @property
    def buffered(self) -> int:
        """The number of bytes held."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Add bytes received on the connection."""
        self._buffer += data

    def take_pings(self) -> int:
        """The number of CRLFCRLF pings seen since the last call, which it resets."""
        pings = self._pings
        self._pings = 0
        return pings

    def next_message(self) -> Request | Response | None:
        """The next complete message, or None if more bytes are needed.

        Returns:
            The message, or None.

        Raises:
            ParseError: the next message is malformed. If ``fatal`` is False it has been
                consumed and the stream goes on; if True the framing is lost (missing or
                bad Content-Length, a message over ``max_size``): close the connection
                after answering. After a fatal error every call raises it again.
        """
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        total = self._total
        if total < 0:
            self._skip_keepalives()
            if not buffer:
                return None
            # Resume the search where the last one stopped (minus 3 bytes, in case the
            # blank line was cut between two reads): a message fed byte by byte is
            # scanned once, not once per byte.
            end = buffer.find(_BLANK_LINE, self._searched)
            if end < 0:
                if len(buffer) > self._max_size:
                    self._fail(ParseError("Message too large", status=413, fatal=True))
                self._searched = max(0, len(buffer) - 3)
                return None
            total = end + 4 + self._content_length(bytes(buffer[:end]))
            if total > self._max_size:
                self._fail(
                    ParseError(f"Message of {total} bytes is too large", status=413, fatal=True)
                )
            self._total = total
        if len(buffer) < total:
            return None
        data = bytes(buffer[:total])
        del buffer[:total]
        self._searched = 0
        self._total = -1
        return _parse(data, stream=True, max_size=self._max_size)

    def _skip_keepalives(self) -> None:
        # RFC 5626 §4.4.1: CRLFs between messages. Two in a row make a ping, which the
        # transport answers with one CRLF (a pong); RFC 3261 §7.5 lets a receiver skip
        # CRLFs before a start line anyway. A CR alone at the end waits for its LF.
        buffer = self._buffer
        skipped = 0
        while buffer[skipped : skipped + 2] == _CRLF:
            skipped += 2
            self._crlfs += 1
            if self._crlfs == 2:
                self._crlfs = 0
                self._pings += 1
                self.keepalives += 1
        if skipped:
            del buffer[:skipped]
            self._searched = 0
        if buffer and self._crlfs and buffer[:1] != b"\r":
            # A lone CRLF before a message: a pong, or a stray line ending.
            self._crlfs = 0
            self.keepalives += 1

    def _content_length(self, head: bytes) -> int:
        # The framing: exactly one Content-Length with a number (RFC 3261 §18.3 MUST).
        values = _abnf.CONTENT_LENGTH_LINE.findall(head)
        if not values:
            self._fail(ParseError("Missing Content-Length", fatal=True))
        if len(values) > 1:
            self._fail(ParseError("Several Content-Length header lines", fatal=True))
        value = unfold_bytes(values[0]).strip(b" \t")
        if _abnf.DIGITS_BYTES.fullmatch(value) is None:
            shown = show(value.decode("latin-1"))
            self._fail(ParseError(f"Bad Content-Length {shown}", fatal=True))
        return int(value)

    def _fail(self, error: ParseError) -> NoReturn:
        # A fatal error: the stream cannot be re-synchronised; keep raising it.
        buffer = self._buffer
        end = buffer.find(_BLANK_LINE)
        if end >= 0:
            head = bytes(buffer[:end]).decode("utf-8", "surrogateescape")
            start_line, _, section = head.partition("\r\n")
            _complete(error, start_line, section)
        self._error = error
        raise error
