#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
# A stock Debian/Ubuntu python refuses pip installs outside a virtual environment (PEP 668,
# "externally managed"): there, use (and create) the project's .venv. Inside a venv, or with a
# python that is not externally managed (CI's), the given python is used as it is.
if [ -z "${VIRTUAL_ENV:-}" ] && $PY -c 'import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
  [ -x .venv/bin/python ] || $PY -m venv .venv
  PY=.venv/bin/python
fi
# torch first and pinned: a looser spec would pull a multi-GB CUDA build.
$PY -m pip install -q torch==2.13.0
$PY -m pip install -q -e '.[all]'

# End-to-end tests talk to a real Redis on loopback.
if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  if command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no
  else
    apt-get update -q && apt-get install -y -q redis-server && redis-server --daemonize yes --bind 127.0.0.1
  fi
  for _ in $(seq 20); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

# Browser tests drive Debian's headless Chromium through Playwright.
if ! command -v chromium >/dev/null; then
  (apt-get update -q && apt-get install -y -q chromium) >/dev/null 2>&1 || echo "warning: chromium not installed; browser tests will fail" >&2
fi

# Lint first: a style slip fails in seconds, not after the suite.
$PY -m ruff check .

exec $PY -m pytest "$@"
