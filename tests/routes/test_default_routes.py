"""The default routes ship twice: routes/default.py in the source tree, and
triosip/script/default_routes.py in the package (what ``triosip run`` runs with no routes
file, from a wheel too). The second is a symbolic link to the first; should it ever become
a copy (an editor, a checkout without symlinks), this test keeps the two equal."""

from pathlib import Path

from triosip.script import DEFAULT_ROUTES

ROOT = Path(__file__).parents[2]


def test_the_packaged_default_routes_are_routes_default_py() -> None:
    assert DEFAULT_ROUTES.read_text() == (ROOT / "routes" / "default.py").read_text(), (
        "routes/default.py and triosip/script/default_routes.py differ: make the second a "
        "symbolic link to the first again"
    )
