#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine that has only
# Python 3.11 and pip, then runs the checks CI enforces and the whole suite.
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

python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"

echo "== ruff check";     .venv/bin/ruff check .
echo "== ruff format";    .venv/bin/ruff format --check .
echo "== mypy";           .venv/bin/mypy
echo "== import-linter";  .venv/bin/lint-imports
echo "== pytest";         .venv/bin/python -m pytest "$@"
