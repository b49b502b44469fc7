"""Helpers for untrusted header text: unfolding, splitting lists, quoting in reasons."""

from __future__ import annotations

from triosip.sip import _abnf

_MAX_SHOWN = 40


def show(text: str) -> str:
    """A short printable quote of untrusted text for a reason phrase (no CR/LF ever)."""
    shown = text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."
    return ascii(shown)[1:-1] if not shown.isprintable() or not shown.isascii() else shown


def unfold(value: str) -> str:
    """RFC 3261 §7.3.1: each fold (CRLF followed by SP/HT), with the blanks around it, is one SP.

    Linear in the value's length, however many blanks and folds it holds (see _abnf.FOLD).
    """
    if "\r" not in value:
        return value
    pieces = _abnf.FOLD.split(value)
    last = pieces.pop()
    return " ".join([piece.rstrip(" \t") for piece in pieces] + [last])


def unfold_bytes(value: bytes) -> bytes:
    """`unfold` for bytes (a Content-Length value, before the message is decoded)."""
    if b"\r" not in value:
        return value
    pieces = _abnf.FOLD_BYTES.split(value)
    last = pieces.pop()
    return b" ".join([piece.rstrip(b" \t") for piece in pieces] + [last])


def split_commas(value: str) -> list[str]:
    """Split a header value at the commas that separate values (RFC 3261 §7.3.1).

    Commas inside quoted strings and inside ``<>`` do not count. The elements are
    stripped of SP/HT; an empty element stays in the list (the caller decides).
    """
    if "," not in value:  # one value: the usual case
        return [value.strip(" \t")]
    out: list[str] = []
    pos = 0
    end = len(value)
    element = _abnf.LIST_ELEMENT.match
    while True:
        stop = element(value, pos).end()  # type: ignore[union-attr]  # matches ""
        out.append(value[pos:stop].strip(" \t"))
        if stop >= end:
            return out
        pos = stop + 1  # the comma
