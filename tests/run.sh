#!/usr/bin/env bash
# Install everything the tests need (Prometheus, a venv with the project and its dev extras), then run them.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v prometheus >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus >/dev/null \
      || echo "warning: could not install prometheus; its tests will be skipped" >&2
  fi
fi
# Redis for the shared governance state (tests/governance/test_shared_state.py starts its own redis-server).
if ! command -v redis-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null \
      || echo "warning: could not install redis-server; the shared-state tests will be skipped" >&2
  fi
fi
# Headless Chromium for tests/browser (Playwright drives the system executable; no `playwright install`).
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null \
      || echo "warning: could not install chromium; the browser tests will be skipped" >&2
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
# Real vLLM (the CPU build without a GPU) in its own environment, for tests/real_vllm; LLMD_SKIP_REAL_VLLM=1 skips it
# (those tests then skip, saying how to install it).
if [ "${LLMD_SKIP_REAL_VLLM:-0}" != 1 ]; then
  .venv/bin/llmd-kserve vllm install --venv .venv-vllm >/dev/null \
    || echo "warning: could not install vLLM into .venv-vllm; the real-vLLM tests will be skipped" >&2
fi
.venv/bin/ruff check .
.venv/bin/mypy  # files and strictness: [tool.mypy] in pyproject.toml
exec .venv/bin/python -m pytest -q "$@"
