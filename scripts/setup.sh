#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine (idempotent; fast when already done):
# a venv in .venv with the project and its pinned dependencies, DataJuicer's extra included
# (so CI runs the adapter tests; it adds about 15 s to a cold install).
# `scripts/setup.sh --k8s` also builds/caches kube-apiserver v1.20.2 + etcd for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Headless Chromium and its WebDriver for the dashboard's browser tests (Debian's builds:
# the tests never download a browser).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "setup.sh: the dashboard tests need Debian's chromium and chromium-driver: sudo apt-get install -y chromium chromium-driver" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.dj-installed
want=$(cat pyproject.toml requirements-lock.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # fasttext and kenlm (the models extra) compile from source.
  if ! command -v g++ >/dev/null || ! command -v cmake >/dev/null; then
    apt-get update -qq && apt-get install -y -qq g++ cmake >/dev/null
  fi
  .venv/bin/python -m pip install -q --upgrade pip
  # The lock pins the boto stack together; unpinned, pip backtracks for many minutes.
  .venv/bin/python -m pip install -q -c requirements-lock.txt -e '.[ray,operator,test,datajuicer,models]'
  # py-data-juicer installs its own `dj-process` script; ours must be the one on PATH.
  .venv/bin/python -m pip install -q --no-deps --force-reinstall -e .
  echo "$want" > "$stamp"
fi
if [ "${1:-}" = "--k8s" ]; then
  bash scripts/build-kube-apiserver.sh >/dev/null
fi
