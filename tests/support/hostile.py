"""Hostile messages: one field padded with ~64 KB of blanks or folds, to catch slow parsing.

A regex that backtracks on a run of blanks costs time quadratic in the run's length; one
such datagram used to hold the event loop for seconds. `hostile_cases` builds, for every
field the parser or an accessor reads and every shape of padding, a message just under
the 65,535-byte limit; tests/sip/test_hostile.py asserts each costs a few ms of CPU and
bench/bench_hostile.py prints the figures.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from triosip.sip import ParseError, Request, StreamParser, parse_message

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# The padding: a little under the size limit once the rest of the message is added.
SIZE = 64_000

FORMS: dict[str, str] = {
    "spaces": " " * SIZE,
    "tabs": "\t" * SIZE,
    "mixed": " \t" * (SIZE // 2),
    "folds": "\r\n " * (SIZE // 3),
    "blanks-fold": " " * SIZE + "\r\n ",
    "blanks-garbage": " \t" * (SIZE // 2) + '@,;<"=',
    # A fold after the garbage: the unfolding pattern runs, and must not retry the run.
    "blanks-garbage-fold": " " * SIZE + "@\r\n x",
    # Not blanks, but as long: a label that cannot end a hostname, a long number.
    "letters": "a" * SIZE + "-",
    "digits": "1" * SIZE,
}

# (name, the line as it is in BASE): the padding goes into the value of that line.
FIELDS: dict[str, str] = {
    "start-line": "INVITE sip:bob@biloxi.example.com SIP/2.0",
    "via": "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
    "via-second": "Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK-2nd;received=192.0.2.5",
    "from": "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
    "to": "To: Bob <sip:bob@biloxi.example.com>",
    "call-id": "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "cseq": "CSeq: 314159 INVITE",
    "max-forwards": "Max-Forwards: 70",
    "route": "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
    "record-route": "Record-Route: <sip:p3.example.com;lr>",
    "contact": 'Contact: "Alice A" <sip:alice@192.0.2.101:5060>;expires=60',
    "generic": "Subject: lunch, today",
    "content-length": "Content-Length: 0",
}
BASE = [
    FIELDS["start-line"],
    FIELDS["via"],
    FIELDS["via-second"],
    FIELDS["max-forwards"],
    FIELDS["to"],
    FIELDS["from"],
    FIELDS["call-id"],
    FIELDS["cseq"],
    FIELDS["route"],
    FIELDS["record-route"],
    FIELDS["contact"],
    FIELDS["generic"],
    FIELDS["content-length"],
]


def _places(line: str, field: str) -> Iterator[tuple[str, int]]:
    # Where the padding goes: (place, offset in the line).
    if field == "start-line":
        yield "after-method", line.index(" ")
        yield "after-uri", line.rindex(" ")
        yield "end", len(line)
        return
    colon = line.index(":")
    yield "name", colon  # between the name and the colon
    yield "value-start", colon + 1
    value = line[colon + 1 :]
    for mark in (" ", ";", ",", "<", "@", "="):
        at = value.find(mark, 1)
        if at > 0:
            yield f"before-{mark}", colon + 1 + at
    yield "end", len(line)


def hostile_cases() -> Iterator[tuple[str, str, str, bytes]]:
    """Every (field, form, place, datagram)."""
    for field, line in FIELDS.items():
        n = BASE.index(line)
        for place, at in _places(line, field):
            for form, padding in FORMS.items():
                if place == "name" and "\r\n" in padding:
                    continue  # a fold inside a name is a line of its own: "folds" covers it
                lines = [*BASE[:n], line[:at] + padding + line[at:], *BASE[n + 1 :]]
                data = ("\r\n".join(lines) + "\r\n\r\n").encode()
                yield field, form, place, data


def _accessors(m: Request | Any) -> list[Callable[[], object]]:
    out: list[Callable[[], object]] = [
        lambda: m.via,
        lambda: m.top_via,
        lambda: m.route,
        lambda: m.record_route,
        lambda: m.contact,
        lambda: m.from_,
        lambda: m.to,
        lambda: m.cseq,
        lambda: m.call_id,
        lambda: m.max_forwards,
        lambda: m.content_length,
        lambda: m.from_.uri,
        lambda: m.to.uri,
        lambda: [entry.uri for entry in m.route],
        lambda: [entry.uri for entry in m.record_route],
        lambda: [entry.uri for entry in m.contact],
        lambda: [dict(via.params) for via in m.via],
        lambda: [m.header_values(name) for name in set(m._names())],
    ]
    if isinstance(m, Request):
        out.append(lambda: m.uri)
    return out


def worst_cpu(data: bytes) -> tuple[float, str]:
    """The largest CPU time (s) of parsing `data` or of any first read of a field."""
    worst = (0.0, "")

    def timed(label: str, call: Callable[[], object]) -> object:
        nonlocal worst
        start = time.process_time()
        try:
            result = call()
        except ParseError:
            result = None
        spent = time.process_time() - start
        worst = max(worst, (spent, label))
        return result

    m = timed("parse_message", lambda: parse_message(data))

    def stream() -> object:
        parser = StreamParser()
        parser.feed(data)
        return parser.next_message()

    timed("StreamParser", stream)
    if m is not None:
        for n, accessor in enumerate(_accessors(m)):
            timed(f"accessor {n}", accessor)
    return worst
