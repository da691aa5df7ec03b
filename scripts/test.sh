#!/usr/bin/env bash
# Set up everything the tests need (venv, kube-apiserver + etcd build), bring up the local
# one-node cluster with the project's image (scripts/local-cluster.sh, local-images.sh),
# then run the suite. Extra args go to pytest (e.g. `scripts/test.sh tests/worker -x`).
# DJ_REQUIRE_K8S and DJ_REQUIRE_LOCAL_CLUSTER make a missing apiserver or cluster a test
# failure rather than a skip. The cluster is left running (a rerun reuses it);
# `scripts/local-cluster.sh down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --k8s
start=$SECONDS
bash scripts/local-cluster.sh up
# a subshell: KUBECONFIG must not leak into the other tests, which run their own apiservers
(eval "$(bash scripts/local-cluster.sh env)" && bash scripts/local-images.sh all)
echo "test.sh: local cluster and images ready in $((SECONDS - start))s" >&2
export DJ_REQUIRE_K8S=1 DJ_REQUIRE_LOCAL_CLUSTER=1
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
