#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
# Never install into an interpreter outside a virtual environment (a system or pyenv python,
# CI's included): outside one, create (once) and use the project's .venv. A python that is
# itself a venv's (sys.prefix != sys.base_prefix) is used as it is.
if ! $PY -c 'import sys; sys.exit(0 if sys.prefix != sys.base_prefix else 1)'; then
  [ -x .venv/bin/python ] || $PY -m venv .venv
  PY=.venv/bin/python
fi
# torch first and pinned: a looser spec would pull a multi-GB CUDA build.
$PY -m pip install -q torch==2.13.0
$PY -m pip install -q -e '.[all]'

# End-to-end tests talk to a real Redis: SEAM_TEST_REDIS_URL (tests/support.py), else one on loopback.
if [ -z "${SEAM_TEST_REDIS_URL:-}" ] && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
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

# The Label Studio end-to-end test runs the real server, pinned, from a venv of its own (it pins
# numpy and Django versions that must not replace ours), made once and kept in the cache. The
# marker is written last, so an interrupted install is redone. tests/service/integrations/labelstudio_real.py
# reads the same SEAM_LS_VENV.
LS_VERSION=1.23.2
export SEAM_LS_VENV=${SEAM_LS_VENV:-$HOME/.cache/seam-ls-venv}
if [ "$(cat "$SEAM_LS_VENV/.seam-ready" 2>/dev/null)" != "label-studio==$LS_VERSION" ]; then
  rm -rf "$SEAM_LS_VENV"
  $PY -m venv "$SEAM_LS_VENV"
  "$SEAM_LS_VENV/bin/python" -m pip install -q "label-studio==$LS_VERSION"
  echo "label-studio==$LS_VERSION" > "$SEAM_LS_VENV/.seam-ready"
fi

# Lint first: a style slip fails in seconds, not after the suite.
$PY -m ruff check .

exec $PY -m pytest "$@"
