"""Parsing is linear: no field padded with 64 KB of blanks or folds costs more than ~10 ms.

This used to stall the event loop for seconds per datagram: the unfolding pattern
(``[ \\t]*\\r\\n[ \\t]+``, applied with ``re.sub``) retried at every blank of a run that
was not followed by a fold, so a 64 KB run cost 64K²/2 steps (7 to 10 s on this machine
for one Content-Length, Via, From, To or Call-ID value), and a value folded 20,000 times
was joined line by line in quadratic time (35 to 75 ms).
"""

from __future__ import annotations

import gc

import pytest

from tests.support.hostile import FIELDS, FORMS, hostile_cases, worst_cpu

# CPU seconds allowed per parse or first read of a field, for a ~64 KB message.
LIMIT = 0.010

CASES: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
for _field, _form, _place, _data in hostile_cases():
    CASES.setdefault((_field, _form), []).append((_place, _data))


def assert_cheap(place: str, data: bytes) -> None:
    # The machine is shared: a case over the limit gets two more tries, and only the
    # best counts (a quadratic case fails all three by far).
    spent, where = worst_cpu(data)
    if spent >= LIMIT:
        spent, where = min((spent, where), worst_cpu(data), worst_cpu(data))
    assert spent < LIMIT, f"{place}: {where} took {spent * 1000:.1f} ms of CPU"


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("field", list(FIELDS))
def test_hostile_padding_costs_little_cpu(field: str, form: str) -> None:
    gc.collect()
    gc.disable()  # a collection in the middle is not the parser's cost
    try:
        for place, data in CASES[(field, form)]:
            assert_cheap(place, data)
    finally:
        gc.enable()


RESPONSE_FIELDS = ("via", "via-second", "record-route", "contact")


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("field", RESPONSE_FIELDS)
def test_hostile_padding_in_a_response_costs_little_cpu(field: str, form: str) -> None:
    # The same padding in a response, whose Vias, Record-Route and Contact the parser
    # checks with patterns of their own (_check.accept_parsed).
    gc.collect()
    gc.disable()
    try:
        for place, data in CASES[(field, form)]:
            response = data.replace(
                b"INVITE sip:bob@biloxi.example.com SIP/2.0", b"SIP/2.0 200 OK", 1
            )
            assert_cheap(place, response)
    finally:
        gc.enable()
