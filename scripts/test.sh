#!/usr/bin/env bash
# Set up everything the tests need (venv, kube-apiserver + etcd build), then run the suite.
# Extra args go to pytest (e.g. `scripts/test.sh tests/worker -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --k8s
export DJ_REQUIRE_K8S=1
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
