"""The documentation stays true to the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_route_api_reference_is_generated_from_the_current_docstrings() -> None:
    printed = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "make_routes_reference.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    committed = (ROOT / "docs" / "routes.md").read_text()
    assert printed == committed, (
        "docs/routes.md is out of date: run "
        ".venv/bin/python docs/make_routes_reference.py > docs/routes.md"
    )


def test_the_docs_point_at_nothing_outside_the_repository() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        for outside in ("DESIGN.md", "STYLE.md", "../shared"):
            assert outside not in text, f"{path.name} names {outside}"
