"""How many function calls a call costs, by the layer of triosip that makes them.

Runs bench/bench_path.py with a profile hook in place of its cProfile: each Python or C
function call is counted for the innermost triosip frame on the stack at that moment
(``sip``, ``transaction``, ``proxy``, ``script`` with the routes file, ``transport``...),
so what trio does inside a nursery or a cancel scope that the proxy opens counts for the
proxy. The counts are deterministic, unlike CPU time on a shared machine: compare them
before and after a change of one layer.

    .venv/bin/python bench/calls_by_layer.py --calls 1000

Arguments are bench_path.py's (``--profile`` is set here).
"""

from __future__ import annotations

import collections
import cProfile
import runpy
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import FrameType

_counts: collections.Counter[str] = collections.Counter()
_layers: dict[str, str] = {}


def _layer_of(filename: str) -> str:
    layer = _layers.get(filename)
    if layer is None:
        if "/triosip/" in filename:
            part = filename.rsplit("/triosip/", 1)[1]
            layer = part.split("/", 1)[0] if "/" in part else part.removesuffix(".py")
            if layer == "default_routes":
                layer = "script"
        elif "triosip_routes" in filename or "/routes/" in filename:
            layer = "script"
        else:
            layer = ""
        _layers[filename] = layer
    return layer


def _hook(frame: FrameType, event: str, _arg: Any) -> None:
    if event not in ("call", "c_call"):
        return
    current: FrameType | None = frame
    while current is not None:
        layer = _layer_of(current.f_code.co_filename)
        if layer:
            _counts[layer] += 1
            return
        current = current.f_back
    _counts["(outside triosip)"] += 1


class _CallCounter:
    """Stands in for bench_path.py's ``cProfile.Profile``."""

    def enable(self) -> None:
        sys.setprofile(_hook)

    def disable(self) -> None:
        sys.setprofile(None)

    def dump_stats(self, _path: str) -> None:
        calls = int(sys.argv[sys.argv.index("--calls") + 1]) if "--calls" in sys.argv else 3000
        total = sum(_counts.values())
        print("function calls per SIP call, by the layer that makes them:")
        for layer, count in _counts.most_common():
            print(f"  {layer:20s} {count / calls:7.0f}")
        print(f"  {'total':20s} {total / calls:7.0f}")


def main() -> None:
    cProfile.Profile = _CallCounter  # type: ignore[misc, assignment]
    script = Path(__file__).with_name("bench_path.py")
    sys.argv = [str(script), *sys.argv[1:], "--profile", "unused"]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
