"""Header lines: names (canonical and spelled), `Header`, and the line helpers.

A header line is kept as the text it came as; this module knows its name (compact forms
folded in, RFC 3261 §7.3.3), its value (unfolded, §7.3.1), and how to write a new one
without letting a value inject another line.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from triosip.sip import _abnf
from triosip.sip._errors import LocalSIPError
from triosip.sip._text import unfold

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

# RFC 3261 §7.3.3 compact forms, and those of later RFCs the issue lists:
# RFC 3265 (o, u), RFC 3515 (r), RFC 3892 (b), RFC 4028 (x), RFC 4474 (y),
# RFC 3841 (a, j, d).
COMPACT_FORMS: Final[Mapping[str, str]] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "k": "supported",
    "s": "subject",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "y": "identity",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
}

# Spellings that title-casing would get wrong.
_SPELLINGS: Final[Mapping[str, str]] = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}


def canonical_name(name: str) -> str:
    """The canonical name of a header: lower-case, compact forms expanded (``"v"`` → "via")."""
    lowered = name.lower()
    return COMPACT_FORMS.get(lowered, lowered)


def spelling(name: str) -> str:
    """The usual spelling of a header name: "Via", "Call-ID", "CSeq", "Record-Route"…"""
    canonical = canonical_name(name)
    known = _SPELLINGS.get(canonical)
    if known is not None:
        return known
    return "-".join(part.capitalize() for part in canonical.split("-"))


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _line_value(line: str) -> str:
    # The value of a header line: after the colon, unfolded, stripped (RFC 3261 §7.3.1).
    return unfold(line.partition(":")[2]).strip(" \t")


@functools.lru_cache(maxsize=512)
def _checked_name(name: str) -> tuple[str, str]:
    # A name our code asks for: its spelling and canonical name (the few names a proxy
    # writes are cached, so an edit does not title-case them again).
    if _abnf.HEADER_NAME.fullmatch(name) is None:
        raise LocalSIPError(f"Invalid header name {name!r}")
    return spelling(name), canonical_name(name)


def _make_line(name: str, value: str) -> tuple[str, str]:
    # A new header line "Name: value" and its canonical name; refuses what would inject.
    spelled, canonical = _checked_name(name)
    if "\r" in value or "\n" in value or "\x00" in value:
        raise LocalSIPError(f"Header value with CR, LF or NUL: {value!r}")
    return f"{spelled}: {value}", canonical


@dataclass(frozen=True, slots=True)
class Header:
    """One header line.

    Attributes:
        name: the canonical name: lower-case long form ("via", "call-id"), compact
            forms folded in.
        raw: the whole line as received, name and colon included, folds kept, without
            the final CRLF; serializing writes exactly this.
    """

    name: str
    raw: bytes

    @property
    def value(self) -> str:
        """The value: unfolded, stripped, decoded (UTF-8, surrogateescape: never raises)."""
        return _line_value(self.raw.decode("utf-8", "surrogateescape"))

    @classmethod
    def make(cls, name: str, value: str) -> Header:
        """Build ``Name: value`` with the usual spelling of the name.

        Raises:
            LocalSIPError: the name is not a token, or the value holds CR, LF or NUL.
        """
        line, canonical = _make_line(name, value)
        return cls(canonical, _encode(line))


def names_of(lines: Sequence[str]) -> tuple[str, ...]:
    """The canonical name of each header line."""
    # Most lines are "long-name:" with nothing odd: one findall finds them all.
    names: list[str] = _abnf.FAST_NAMES.findall("\n" + "\n".join(lines).lower())
    if len(names) == len(lines):
        return tuple(names)
    return tuple(canonical_name(line.partition(":")[0].strip(" \t")) for line in lines)


# The header lines a response copies from its request (RFC 3261 §8.2.6.2), in order.
_COPIED: Final = ("via", "from", "to", "call-id", "cseq")


def header_lines_named(lines: Iterable[str], names: Iterable[str]) -> tuple[Header, ...]:
    """The Via, From, To, Call-ID and CSeq lines as `Header`s (a ParseError's answer)."""
    return tuple(
        Header(name, _encode(line))
        for line, name in zip(lines, names, strict=False)
        if name in _COPIED
    )
