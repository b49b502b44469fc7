"""No module of triosip imports another package's private modules or names.

import-linter's ``private_modules`` contract (pyproject.toml) checks modules; this reads
the imports with ``ast`` and checks names as well: ``from triosip.sip import _encode`` in
``triosip/transaction`` imports no private module, yet reads a private name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import triosip

ROOT = Path(triosip.__file__).parent


def package_of(module: str) -> str:
    # "triosip.transaction._server" -> "triosip.transaction"; "triosip.cli" stays.
    return ".".join(module.split(".")[:2])


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def offences(source: str, importer: str) -> list[str]:
    """The imports in ``source`` (the module ``importer``) of another package's privates."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [(alias.name, "") for alias in node.names]
        else:
            continue  # relative imports stay inside their package
        for module, name in targets:
            if module.split(".")[0] != "triosip" or package_of(module) == package_of(importer):
                continue
            if any(is_private(part) for part in module.split(".")) or is_private(name):
                found.append(f"{importer}:{node.lineno} imports {module} {name}".rstrip())
    return found


def test_the_checker_finds_a_private_name_and_a_private_module() -> None:
    source = "from triosip.sip import _encode\nimport triosip.transport._udp\n"
    assert offences(source, "triosip.transaction._client") == [
        "triosip.transaction._client:1 imports triosip.sip _encode",
        "triosip.transaction._client:2 imports triosip.transport._udp",
    ]
    # Inside its own package, a private module is the package's business.
    assert offences("from triosip.sip._message import _encode\n", "triosip.sip._builders") == []


def test_no_module_imports_another_package_private_modules_or_names() -> None:
    found = [
        offence
        for path in sorted(ROOT.rglob("*.py"))
        for offence in offences(path.read_text(encoding="utf-8"), module_name(path))
    ]
    assert found == []
