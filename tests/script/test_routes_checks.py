"""What a routes file is checked for when it loads (``triosip run``, a reload, ``triosip
check``): every route is an ``async def``, every route it names (``resume=``,
``on_failure``...) is a registered route, and the parameters it declares
(``Routes(requires=...)``) are given. Each mistake is one line that says what to fix, and
``triosip check`` exits 2 on it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from triosip.cli import main
from triosip.script import RoutesLoadError, load_routes

if TYPE_CHECKING:
    from pathlib import Path

EXIT_USAGE = 2

DEF_ROUTE = """
from triosip.script.api import Routes
routes = Routes()

@routes.request
def main(req):
    pass
"""

REQUIRES = """
from triosip.script.api import Routes
routes = Routes(requires=("downstream", "backup"))

@routes.request
async def main(req):
    await req.relay(req.params["downstream"])
"""

MISSING_RESUME = """
from triosip.script.api import Routes, sleep
routes = Routes()

@routes.request
async def main(req):
    req.async_(sleep(1), resume=found)
"""

UNREGISTERED_FAILURE = """
from triosip.script.api import Routes
routes = Routes()

@routes.request
async def main(req):
    req.on_failure(failover)
    await req.relay()

async def failover(req):
    pass
"""

LOCAL_RESUME = """
from triosip.script.api import Routes, sleep
routes = Routes()

@routes.request
async def main(req):
    chosen = pick(req)
    req.async_(sleep(1), resume=chosen)

@routes.resume
async def done(req):
    pass

def pick(req):
    return done
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.py"
    path.write_text(text)
    return path


# Each of these used to load: the def route then failed on every request (a 500 and a
# traceback per call), the missing name raised NameError in the route, the undecorated
# failure route ran unregistered, and the missing parameter was a KeyError per call.
@pytest.mark.parametrize(
    ("text", "params", "says"),
    [
        (DEF_ROUTE, {}, "line 5: ScriptError: route main is a plain def: write `async def main`"),
        (
            REQUIRES,
            {"downstream": "udp:127.0.0.1:5080"},
            "needs --define backup=VALUE (it declares requires=('downstream', 'backup'))",
        ),
        (MISSING_RESUME, {}, "line 7: resume route `found` is not defined"),
        (
            UNREGISTERED_FAILURE,
            {},
            "line 7: failure route `failover` is not a registered route: decorate it with "
            "@routes.failure",
        ),
    ],
    ids=["def-route", "missing-define", "missing-resume", "unregistered-failure"],
)
def test_a_mistake_is_refused_in_one_line(
    tmp_path: Path, text: str, params: dict[str, str], says: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(RoutesLoadError) as raised:
        load_routes(path, params)
    message = str(raised.value)
    assert message.startswith(f"routes file {path}"), message
    assert message.endswith(says), message
    assert "\n" not in message


def test_a_route_named_through_a_variable_is_left_to_run_time(tmp_path: Path) -> None:
    routes = load_routes(_write(tmp_path, LOCAL_RESUME), {})
    assert set(routes.named) == {"done"}
    assert routes.kinds == {"done": "resume"}


def test_required_parameters_given_load(tmp_path: Path) -> None:
    params = {"downstream": "udp:127.0.0.1:5080", "backup": "udp:127.0.0.1:5081"}
    routes = load_routes(_write(tmp_path, REQUIRES), params)
    assert routes.requires == ("downstream", "backup")


@pytest.mark.parametrize(
    ("text", "defines", "says"),
    [
        (DEF_ROUTE, [], "route main is a plain def"),
        (REQUIRES, ["--define", "downstream=@callee"], "needs --define backup=VALUE"),
        (MISSING_RESUME, [], "resume route `found` is not defined"),
    ],
    ids=["def-route", "missing-define", "missing-resume"],
)
def test_check_exits_2_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    defines: list[str],
    says: str,
) -> None:
    # This used to be an unknown command (argparse's usage error).
    path = _write(tmp_path, text)
    assert main(["check", str(path), *defines]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"triosip: routes file {path}"), err
    assert says in err, err
