"""The names routes go by, in log lines and in the management interface."""

from __future__ import annotations


def route_name(route: object) -> str:
    """The name a route goes by in log lines: its qualified name (``failover``,
    ``make_routes.<locals>.failover``), or its repr for an odd callable.

    The script layer names the wrappers it hands the proxy after the route they run.
    """
    name = getattr(route, "__qualname__", None)
    return name if isinstance(name, str) and name else repr(route)


def short_route_name(route: object) -> str:
    """The name a route goes by in ``triosip tasks``: the last part of its qualified name
    (``failover`` for ``make_routes.<locals>.failover``)."""
    return route_name(route).rsplit(".", 1)[-1]
