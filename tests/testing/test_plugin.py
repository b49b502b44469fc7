"""The pytest plugin (``triosip.testing.plugin``, entry point ``pytest11``), as a route
author uses it: a pytest run of its own (pytester) on a tiny routes file and the
example test of the README, with real sockets and under ``autojump_clock``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

pytest_plugins = ("pytester",)

README = Path(__file__).parents[2] / "README.md"


def _readme_block(heading: str) -> str:
    """The first ```python block after `heading` in the README."""
    text = README.read_text()
    after = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", after, re.DOTALL)
    assert match is not None, heading
    return match.group(1)


def test_the_readme_example_runs_with_the_plugin(pytester: pytest.Pytester) -> None:
    # This used to be no plugin at all: the fixtures were unknown ("fixture
    # 'triosip_proxy' not found").
    pytester.makeini("[pytest]\ntrio_mode = true\nfilterwarnings = error\n")
    (pytester.path / "routes.py").write_text(_readme_block("routes file, `routes.py`"))
    pytester.makepyfile(test_routes=_readme_block("and its tests, `test_routes.py`"))
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
