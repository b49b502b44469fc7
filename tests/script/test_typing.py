"""A routes file outside the repository, checked by mypy as its author would.

After an editable install (``pip install -e . --config-settings editable_mode=strict``, as
tests/run.sh and the README do), mypy finds `triosip.script.api` and its types
(``py.typed``), and the results of ``req.call`` and ``req.gather`` have the op's types.
"""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

ROUTES = """
from triosip.script.api import RequestContext, Routes, exec_

routes = Routes()


@routes.request
async def main(req: RequestContext) -> None:
    rows = await req.call(req.db.query("SELECT 1"), timeout=1.0)
    reveal_type(rows)
    count = await req.call(lambda: 3)
    reveal_type(count)
    found, answer, ran = await req.gather(
        req.db.query("SELECT 2"), req.rest.get("http://127.0.0.1:1/"), exec_(["true"])
    )
    reveal_type(answer)
    reveal_type(ran)
    await req.reply(200 if answer.status == 200 and found else 404)
"""


def test_mypy_finds_the_api_and_types_call_and_gather(tmp_path: Path) -> None:
    (tmp_path / "my_routes.py").write_text(ROUTES)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "my_routes.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout
    # This used to say: Cannot find implementation or library stub for module named
    # "triosip.script.api" (setuptools' default editable install is an import hook, which
    # mypy does not run); req.call and req.gather returned Any.
    assert "import-not-found" not in out, (
        "mypy cannot find triosip: reinstall with "
        "pip install -e '.[test]' --config-settings editable_mode=strict\n" + out
    )
    marker = "Revealed type is "
    revealed = [line.split(marker, 1)[1] for line in out.splitlines() if marker in line]
    assert revealed == [
        '"list[dict[str, Any]]"',
        '"int"',
        '"triosip.ops._rest.RestResponse"',
        '"triosip.ops._exec.ExecResult"',
    ], out
