"""Write docs/routes.md, the route API's reference, from the docstrings of triosip.script.api.

    .venv/bin/python docs/make_routes_reference.py > docs/routes.md

tests/test_docs.py checks that the committed file is what this prints, so the reference
cannot drift from the code.
"""

from __future__ import annotations

import inspect

from triosip.script import api

CONTEXTS = (
    "RequestContext",
    "FailureContext",
    "ReplyContext",
    "BranchContext",
    "ReportContext",
    "ErrorContext",
)
OTHERS = ("Routes", "Database", "RestClient", "RestResponse", "ExecResult")
FUNCTIONS = ("exec_", "sleep", "in_thread")
ERRORS = ("OpError", "OpFailed", "OpTimeout", "ScriptError", "ParseError")


def first_paragraph(thing: object) -> str:
    doc = inspect.getdoc(thing) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def members(cls: type) -> list[str]:
    lines = []
    for name, member in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        static = inspect.getattr_static(cls, name)
        if isinstance(static, property):
            label = f"`{name}`"
        elif callable(member):
            label = f"`{name}{signature(member)}`"
        else:
            continue
        text = (
            first_paragraph(member) if not isinstance(static, property) else first_paragraph(static)
        )
        lines.append(f"- {label}" + (f": {text}" if text else ""))
    return lines


def signature(function: object) -> str:
    try:
        parameters = list(inspect.signature(function).parameters)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "(…)"
    return "(" + ", ".join(p for p in parameters if p != "self") + ")"


def main() -> None:
    print("# The route API (`triosip.script.api`)")
    print()
    print("Generated from the docstrings by `docs/make_routes_reference.py`; the module's own")
    print("docstring is the tutorial:")
    print()
    print("```")
    print(inspect.getdoc(api))
    print("```")
    for group, names in (
        ("Route contexts", CONTEXTS),
        ("The registry and the ops' results", OTHERS),
    ):
        print()
        print(f"## {group}")
        for name in names:
            cls = getattr(api, name)
            print()
            print(f"### `{name}`")
            print()
            print(first_paragraph(cls))
            print()
            print("\n".join(members(cls)))
    print()
    print("## Ops")
    print()
    for name in FUNCTIONS:
        function = getattr(api, name)
        print(f"- `{name}{signature(function)}`: {first_paragraph(function)}")
    print()
    print("## Errors")
    print()
    for name in ERRORS:
        print(f"- `{name}`: {first_paragraph(getattr(api, name))}")


if __name__ == "__main__":
    main()
