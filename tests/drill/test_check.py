"""``triosip check``'s drill over real routes files: every file of routes/ passes it, and
a file whose route blocks the proxy or leaves a thread or a process behind fails it,
naming what it left. Each fault runs one call through a proxy on 127.0.0.1 (the
drill's short timers keep a file's drill to a few seconds)."""

from __future__ import annotations

import io
import os
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console

from triosip.cli import main
from triosip.drill import FAULTS, check_routes

ROUTES = Path(__file__).parents[2] / "routes"

# What each routes file needs, with the drill's stand-ins, and op timeouts that are short
# so that the op-timeout fault ends within the drill's short timers.
DEFINES = {
    "default.py": {"downstream": "@callee", "backup": "@callee"},
    "exec_example.py": {"program": "@program", "exec_timeout": "0.2"},
    "opensips_async.py": {"downstream": "@callee", "db_timeout": "0.2"},
    "parallel_lookup.py": {"routing_url": "@http", "lookup_timeout": "0.2"},
    "rest_routing.py": {"routing_url": "@http", "rest_timeout": "0.2"},
}

LEAKY = """
import os
import threading
import time

from triosip.script.api import Routes

routes = Routes()

@routes.request
async def main(req):
    how = req.params["leak"]
    if how == "sleep":
        time.sleep(0.3)  # blocks the whole proxy
    elif how == "thread":
        threading.Thread(target=time.sleep, args=(0.5,), name="route's own").start()
    elif how == "process":
        pid = os.posix_spawnp("sleep", ["sleep", "0.5"], os.environ)  # never waited for
        with open(req.params["pids"], "a") as pids:
            pids.write(f"{pid}\\n")
    await req.relay(req.params["downstream"])
"""


def _subscribers(tmp_path: Path) -> str:
    """A database with the caller (alice, as the drill's caller is) as a subscriber."""
    path = tmp_path / "subscribers.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE subscribers (username TEXT PRIMARY KEY, setid INTEGER)")
        db.execute("INSERT INTO subscribers VALUES ('alice', 1)")
    db.close()
    return f"sqlite:///{path}"


def _check(paths: list[Path], defines: dict[str, str], **options: object) -> tuple[int, str]:
    out = io.StringIO()
    console = Console(file=out, width=240, color_system=None)
    code = check_routes([str(p) for p in paths], defines, console=console, **options)  # type: ignore[arg-type]
    return code, out.getvalue()


def test_every_routes_file_has_its_defines() -> None:
    assert sorted(p.name for p in ROUTES.glob("*.py")) == sorted(DEFINES)


@pytest.mark.parametrize("name", sorted(DEFINES))
def test_every_routes_file_passes_the_drill(name: str, tmp_path: Path) -> None:
    code, table = _check([ROUTES / name], DEFINES[name], db_url=_subscribers(tmp_path))
    assert code == 0, table
    assert f"triosip check {ROUTES / name}: ok" in table
    # Every fault has its line, and none is skipped for want of work or of a relay but
    # those the file can't reach (default.py starts no op).
    for fault in FAULTS:
        assert f"│ {fault.name} " in table, table
    skipped = table.count("n/a")
    assert skipped == (2 if name == "default.py" else 0), table


@pytest.mark.parametrize(
    ("leak", "says"),
    [
        ("sleep", "blocked the proxy"),
        ("thread", "threads left: route's own"),
        ("process", "children left"),
    ],
)
def test_a_route_that_leaks_fails_the_drill(tmp_path: Path, leak: str, says: str) -> None:
    path = tmp_path / "leaky.py"
    path.write_text(LEAKY)
    pids = tmp_path / "pids"
    defines = {"downstream": "@callee", "leak": leak, "pids": str(pids)}
    try:
        code, table = _check([path], defines, faults=["answered", "cancel"])
    finally:
        for pid in pids.read_text().split() if pids.exists() else []:
            os.waitpid(int(pid), 0)  # the drill saw them left: reap them here
    assert code == 1, table
    assert table.count("FAIL") == 2, table
    assert table.count(says) == 2, table


LAUNCHING = """
from triosip.script.api import Routes, sleep

routes = Routes()

@routes.request
async def main(req):
    req.launch(sleep(0.5))  # a CDR write, say: it outlives the call by design
    await req.relay(req.params["downstream"])
"""


def test_launched_work_is_not_left_behind(tmp_path: Path) -> None:
    path = tmp_path / "launching.py"
    path.write_text(LAUNCHING)
    code, table = _check([path], {"downstream": "@callee"}, faults=["answered"])
    assert code == 0, table


def test_the_command_exits_1_on_a_failed_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "leaky.py"
    path.write_text(LEAKY)
    argv = ["check", str(path), "--define", "downstream=@callee", "--define", "leak=sleep"]
    assert main([*argv, "--fault", "answered"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_an_unknown_fault_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(ROUTES / "default.py"), "--fault", "fire"]) == 2
    assert capsys.readouterr().err == (
        "triosip: no fault 'fire'; the faults are " + ", ".join(f.name for f in FAULTS) + "\n"
    )
