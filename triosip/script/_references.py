"""The routes a routes file names, checked when it loads: each ``resume=``, ``report=``,
``on_failure(...)``, ``on_reply(...)`` and ``on_branch(...)`` that names a route by a
global name must name one that exists and is registered on the file's `Routes`.

Python itself finds a missing name only when the line runs: in a route, on a live call,
as a NameError and a 500. Reading the file's syntax tree finds it at load, as Kamailio's
``-c`` finds an undefined ``route[...]``. A route named through a local variable (a
parameter, a value picked at run time) is left to run time.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from triosip.script._routes import Routes

# The calls that name a route, and where: a keyword argument, or the first positional.
_KEYWORD = {"async_": ("resume", "resume"), "launch": ("report", "report")}
_POSITIONAL = {"on_failure": "failure", "on_reply": "onreply", "on_branch": "branch"}


def unresolved_routes(source: bytes, namespace: Mapping[str, Any], routes: Routes) -> list[str]:
    """The problems with the routes a file names, one line each (``line N: ...``).

    Args:
        source: the file's text.
        namespace: its module's globals, after it ran.
        routes: its registered routes.
    """
    tree = ast.parse(source)
    local = _locally_bound(tree)
    registered = {id(route) for route in routes.named.values()}
    problems = []
    for line, kind, name in _named_routes(tree):
        if name in local:
            continue  # bound in a function: known only when it runs
        value = namespace.get(name)
        if value is None:
            problems.append(f"line {line}: {kind} route `{name}` is not defined")
        elif id(value) not in registered:
            problems.append(
                f"line {line}: {kind} route `{name}` is not a registered route: decorate it "
                f"with @routes.{kind}"
            )
    return problems


def _named_routes(tree: ast.AST) -> Iterator[tuple[int, str, str]]:
    """(line, kind, global name) of each route named by a plain name in a call."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        method = node.func.attr
        if method in _KEYWORD:
            keyword, kind = _KEYWORD[method]
            for argument in node.keywords:
                if argument.arg == keyword and isinstance(argument.value, ast.Name):
                    yield argument.value.lineno, kind, argument.value.id
        elif method in _POSITIONAL and node.args and isinstance(node.args[0], ast.Name):
            yield node.args[0].lineno, _POSITIONAL[method], node.args[0].id


def _locally_bound(tree: ast.Module) -> set[str]:
    """Names bound inside functions and classes (parameters, assignments, loops)."""
    names: set[str] = set()
    for top in tree.body:
        if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for node in ast.walk(top):
            if node is top:
                continue
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
    return names
