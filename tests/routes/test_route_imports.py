"""Routes files reach triosip only through its script API (docs/architecture.md)."""

import ast
from pathlib import Path

import pytest

ROUTES = sorted((Path(__file__).parents[2] / "routes").glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_there_are_routes_files() -> None:
    assert ROUTES, "routes/ holds no routes file"


@pytest.mark.parametrize("path", ROUTES, ids=lambda p: p.name)
def test_routes_import_only_the_script_api(path: Path) -> None:
    triosip_imports = {m for m in imported_modules(path) if m.split(".")[0] == "triosip"}
    assert triosip_imports <= {"triosip.script.api"}, triosip_imports
