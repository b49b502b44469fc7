"""The one helper that names routes, for log lines (qualified) and ``triosip tasks`` (short)."""

from __future__ import annotations

import functools

from triosip.proxy import route_name, short_route_name


def make_route() -> object:
    async def failover() -> None:
        pass

    return failover


def test_a_route_goes_by_its_qualified_name_in_logs_and_its_last_part_in_the_mi() -> None:
    route = make_route()
    assert route_name(route) == "make_route.<locals>.failover"
    assert short_route_name(route) == "failover"


def test_an_odd_callable_goes_by_its_repr() -> None:
    odd = functools.partial(print, "x")
    assert route_name(odd) == repr(odd)
