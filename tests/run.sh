#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine that has only
# Python 3.11 and pip, then runs the checks CI enforces and the whole suite, with a
# PostgreSQL server of its own for the database tests.
# Usage: bash tests/run.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# sipp is the real SIP peer of the tests (Debian package sip-tester).
if ! command -v sipp >/dev/null 2>&1; then
    echo "tests/run.sh: installing sipp (Debian package sip-tester)"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq sip-tester >/dev/null
fi

# PostgreSQL's server (Debian package postgresql): the db op's tests run on it too.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    echo "tests/run.sh: installing PostgreSQL (Debian package postgresql)"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    # Only the binaries: the package's own cluster is not started or used.
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq postgresql >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]" --config-settings editable_mode=strict

# A throwaway server for the suite: a temporary data directory owned by an unprivileged
# user (postgres when we run as root), on 127.0.0.1 and a free port, stopped at the end.
TRIOSIP_TEST_PG_DATA="$(mktemp -d -t triosip-pg-XXXXXX)"
stop_postgres() {
    .venv/bin/python -m triosip.testing.postgres stop "$TRIOSIP_TEST_PG_DATA" || true
    rm -rf "$TRIOSIP_TEST_PG_DATA"
}
trap stop_postgres EXIT
TRIOSIP_TEST_PG_URL="$(.venv/bin/python -m triosip.testing.postgres start "$TRIOSIP_TEST_PG_DATA")"
export TRIOSIP_TEST_PG_URL TRIOSIP_TEST_PG_DATA
echo "== PostgreSQL in $TRIOSIP_TEST_PG_DATA"

echo "== ruff check";     .venv/bin/ruff check .
echo "== ruff format";    .venv/bin/ruff format --check .
echo "== mypy";           .venv/bin/mypy
echo "== import-linter";  .venv/bin/lint-imports
# Branch coverage of triosip/ (in-process code; `triosip run` subprocesses are not counted)
# is printed at the end of the run.
echo "== pytest";         .venv/bin/python -m pytest --cov --cov-report=term "$@"
