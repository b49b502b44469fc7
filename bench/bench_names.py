"""What the operators' features cost per message: "myself" checks, the advertised name
of a Via / Record-Route, the Call-ID + branch prefix of log lines, the per-status counter.

Each figure is the median of 5 runs of a timeit loop, in nanoseconds per call; the "before"
lines are what the same work cost before these features (a set, an f-string).

    .venv/bin/python bench/bench_names.py
"""

from __future__ import annotations

import statistics
import timeit
from collections import Counter

from triosip.log import LogPrefix, shown
from triosip.transport import Address, LocalNames

N = 200_000


def per_call(statement: str, **names: object) -> float:
    runs = timeit.repeat(statement, globals=names, number=N, repeat=5)
    return statistics.median(runs) / N * 1e9


def main() -> None:
    listeners = [Address("udp", "127.0.0.1", 5060), Address("tcp", "127.0.0.1", 5060)]
    as_set = {(a.host, a.port) for a in listeners}
    names = LocalNames(listeners, {})
    wildcard = LocalNames([Address("udp", "0.0.0.0", 5060)], {})
    advertised = LocalNames(listeners, {listeners[0]: ("sip.example.com", None)})
    ours, theirs = ("127.0.0.1", 5060), ("192.0.2.1", 5060)
    wildcard.advertised(Address("udp", "0.0.0.0", 5060), "127.0.0.2")  # the cache warm
    cases = [
        ("myself, a set (before), a hit", "ours in s", {"s": as_set, "ours": ours}),
        ("myself, a set (before), a miss", "t in s", {"s": as_set, "t": theirs}),
        ("myself, names.myself, a hit", "ours in n", {"n": names.myself, "ours": ours}),
        ("myself, names.myself, a miss", "t in n", {"n": names.myself, "t": theirs}),
        ("myself, wildcard, a cached local IP", "ours in n", {"n": wildcard.myself, "ours": ours}),
        (
            "Via name, a plain listener",
            "n.advertised(a, '127.0.0.2')",
            {"n": names, "a": listeners[0]},
        ),
        (
            "Via name, --advertise",
            "n.advertised(a, '127.0.0.2')",
            {"n": advertised, "a": listeners[0]},
        ),
        (
            "Via name, wildcard, cached route",
            "n.advertised(a, '127.0.0.2')",
            {"n": wildcard, "a": Address("udp", "0.0.0.0", 5060)},
        ),
        (
            "log prefix, f-string (before)",
            "f'{shown(c, 64)} {shown(b, 64)}'",
            {"shown": shown, "c": "a84b4c76e66710@pc33.example.com", "b": "z9hG4bK-ts1.2"},
        ),
        (
            "log prefix, LogPrefix",
            "LogPrefix(c, b)",
            {"LogPrefix": LogPrefix, "c": "a84b4c76e66710@pc33.example.com", "b": "z9hG4bK-ts1.2"},
        ),
        ("replies_sent[status] += 1", "c[200] += 1", {"c": Counter()}),
    ]
    for title, statement, env in cases:
        print(f"{title:42} {per_call(statement, **env):8.0f} ns")


if __name__ == "__main__":
    main()
