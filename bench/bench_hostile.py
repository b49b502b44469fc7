"""The stall per hostile 64 KB message: CPU spent on one message whose field is padded.

For each field (start line, Via, a second Via, From, To, Call-ID, CSeq, Max-Forwards,
Route, Record-Route, Contact, a generic header, Content-Length) and each padding (64 KB of
spaces, tabs, both, ``\\r\\n `` folds, blanks then a fold, blanks then garbage, blanks,
garbage and a fold, long letters, long digits), it builds the message of
tests/sip/hostile.py with the padding at the end of the field's value, and prints the
largest CPU time, in ms, of ``parse_message``, of ``StreamParser``, and of the first read
of each lazy field (via, route, contact, from_.uri... and the Request-URI). That is how
long one such datagram holds the event loop.

Usage (from the repository root)::

    .venv/bin/python bench/bench_hostile.py                     # every form
    .venv/bin/python bench/bench_hostile.py --forms spaces,folds
    .venv/bin/python bench/bench_hostile.py --place value-start
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
from pathlib import Path

# tests/sip/hostile.py builds the messages (by path: "tests" may name another package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "sip"))

from hostile import FIELDS, FORMS, hostile_cases, worst_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--forms", default=",".join(FORMS), help="comma-separated forms")
    parser.add_argument("--place", default="end", help="where the padding goes (default: end)")
    args = parser.parse_args()
    forms = args.forms.split(",")
    print(f"Python {platform.python_version()} on {platform.machine()}; ms of CPU per message")
    print(f"{'field':15}" + "".join(f"{form:>20}" for form in forms))
    rows: dict[str, dict[str, float]] = {field: {} for field in FIELDS}
    for field, form, place, data in hostile_cases():
        if form not in forms or place != args.place:
            continue
        gc.collect()
        gc.disable()
        try:
            rows[field][form] = worst_cpu(data)[0] * 1000
        finally:
            gc.enable()
    worst = 0.0
    for field, row in rows.items():
        if row:
            print(f"{field:15}" + "".join(f"{row.get(form, 0.0):20.1f}" for form in forms))
            worst = max(worst, *row.values())
    print(f"worst: {worst:.1f} ms")


if __name__ == "__main__":
    main()
