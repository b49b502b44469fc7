"""A throwaway PostgreSQL server for tests and benches, from the distribution's binaries.

`PostgresServer` runs ``initdb`` and ``pg_ctl`` from ``/usr/lib/postgresql/<version>/bin``
(Debian's ``postgresql`` package) in a temporary data directory, on 127.0.0.1 and a free
port, as an unprivileged user (``postgres`` when we run as root: the server refuses root).
Password authentication over TCP, so that a test can also see a wrong password refused.

`shared_server` is the one server of a test process: the one ``tests/run.sh`` started (it
exports ``TRIOSIP_TEST_PG_URL`` and ``TRIOSIP_TEST_PG_DATA``), else one started on first use
and stopped when the process exits. Also a command, for ``tests/run.sh``::

    python -m triosip.testing.postgres start DIR   # prints the URL; the data go in DIR
    python -m triosip.testing.postgres stop DIR
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from triosip.ops import Database

USER = "triosip"
PASSWORD = "triosip-test"
URL_VARIABLE = "TRIOSIP_TEST_PG_URL"
DATA_VARIABLE = "TRIOSIP_TEST_PG_DATA"


class NoPostgres(RuntimeError):
    """Neither a server given by the environment nor PostgreSQL's binaries to start one."""


def binaries() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has ``initdb``.

    Raises:
        NoPostgres: PostgreSQL's server is not installed.
    """
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise NoPostgres(
            f"no PostgreSQL server: set {URL_VARIABLE}=postgresql://USER:PASSWORD@HOST:PORT/DB, "
            "or install it (apt-get install postgresql), or run bash tests/run.sh, which does"
        )
    return found[-1].parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """A server whose data live in `data` (made by `start`)."""

    data: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        # The server refuses to run as root; Debian's package creates the postgres user.
        user = "postgres" if os.geteuid() == 0 else None
        done = subprocess.run(
            [str(binaries() / argv[0]), *argv[1:]],
            check=False,
            user=user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        if done.returncode:
            problem = done.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"{argv[0]} exited with {done.returncode}: {problem}")

    def start(self) -> None:
        """initdb (once) and start the server; wait until it takes connections."""
        conf = self.data / "pgdata"
        if not conf.exists():
            self.data.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.data, "postgres")
            pwfile = self.data / "pw"
            pwfile.write_text(PASSWORD + "\n")
            if os.geteuid() == 0:
                shutil.chown(pwfile, "postgres")
            self._run(
                "initdb", "-D", str(conf), "-U", USER, f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync",
            )  # fmt: skip
            self.port = self.port or _free_port()
            settings = (
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.data}'\n"
                # Not synchronous_commit = off: a restart test crashes the server (stop -m
                # immediate), and a commit must survive that as it does in production.
                "fsync = off\nfull_page_writes = off\n"
                "max_connections = 200\n"
            )
            with (conf / "postgresql.conf").open("a") as file:
                file.write(settings)
        else:
            self.read_port()
        self._run("pg_ctl", "-D", str(conf), "-l", str(self.data / "log"), "-w", "start")

    def read_port(self) -> None:
        """Take the port from the configuration `start` wrote."""
        for line in (self.data / "pgdata" / "postgresql.conf").read_text().splitlines():
            if line.startswith("port = "):
                self.port = int(line.split("=")[1])

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` is a crash: no checkpoint, connections dropped)."""
        self._run("pg_ctl", "-D", str(self.data / "pgdata"), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """Stop the server, dropping every connection, and start it again."""
        self.stop("immediate")
        self.start()


@functools.cache
def shared_server() -> PostgresServer:
    """The test process's server: the environment's, or one started now (see module doc).

    Raises:
        NoPostgres: neither is possible; the message says what to do.
    """
    if os.environ.get(URL_VARIABLE):
        data = os.environ.get(DATA_VARIABLE)
        if not data:
            raise NoPostgres(f"{URL_VARIABLE} is set but {DATA_VARIABLE} is not")
        server = PostgresServer(Path(data))
        server.read_port()
        return server
    binaries()
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="triosip-pg-")))
    server.start()
    atexit.register(_discard, server)
    return server


def _discard(server: PostgresServer) -> None:
    try:
        server.stop("immediate")
    finally:
        shutil.rmtree(server.data, ignore_errors=True)


def running_sql(marker: str) -> str:
    """A query that counts the statements containing `marker` that the server runs now
    (``pg_stat_activity``: an ``idle`` backend's ``query`` is its last, ended, statement)."""
    return (
        "SELECT count(*) AS n FROM pg_stat_activity WHERE state = 'active' "
        f"AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    )


def sleep_sql(marker: str, seconds: int = 30) -> str:
    """A query that runs `seconds` on the server unless cancelled; `marker` finds it in
    ``pg_stat_activity`` (see `running_sql`)."""
    return f"SELECT pg_sleep({seconds}) AS slept /* {marker} */"


async def wait_running(monitor: Database, marker: str, count: int) -> None:
    """Wait until the server runs `count` statements containing `marker` (callers bound the
    wait with ``fail_after``)."""
    # The server's state: no trio event tells.
    while (await monitor.query(running_sql(marker)))[0]["n"] != count:  # noqa: ASYNC110
        await trio.sleep(0.005)


async def running(monitor: Database, marker: str) -> int:
    """How many statements containing `marker` the server runs now."""
    count: int = (await monitor.query(running_sql(marker)))[0]["n"]
    return count


def main(argv: list[str]) -> int:
    """``start DIR`` or ``stop DIR``; see the module doc."""
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m triosip.testing.postgres start|stop DIR", file=sys.stderr)
        return 2
    server = PostgresServer(Path(argv[1]))
    if argv[0] == "start":
        server.start()
        print(server.url)
    else:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
