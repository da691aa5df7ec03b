#!/usr/bin/env bash
# The kind end-to-end run, as a user would deploy: a kind cluster, our image built and
# `kind load`ed, KubeRay's operator (its Helm chart), MinIO where configs/job.yaml expects
# it, and our chart `helm install`ed; then the pytest part (tests/e2e/kind/) applies
# configs/job.yaml, waits for condition=Complete, stops and resumes a job, checks outputs.
#
#   scripts/kind-e2e.sh [all]   up, then test (the default; the cluster is kept)
#   scripts/kind-e2e.sh up      create or reuse the cluster and install everything
#   scripts/kind-e2e.sh test    run tests/e2e against the cluster that `up` made
#   scripts/kind-e2e.sh down    delete the cluster
#
# Needs docker (a running engine), kind, kubectl and helm on PATH. Idempotent: `up` reuses
# an existing cluster and upgrades the releases. Knobs: DJ_KIND_CLUSTER, DJ_E2E_KUBECONFIG,
# DJ_IMAGE, KUBERAY_VERSION, PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly CLUSTER="${DJ_KIND_CLUSTER:-dj-e2e}"
readonly KUBECONFIG_FILE="${DJ_E2E_KUBECONFIG:-$HOME/.kube/$CLUSTER.kubeconfig}"
readonly IMAGE="${DJ_IMAGE:-ghcr.io/datajuicer-ft/datajuicer-ft:0.1.0}"  # configs/job.yaml's spec.image and the chart's default, built here
readonly KUBERAY_VERSION="${KUBERAY_VERSION:-1.4.2}"
readonly KIND_DIR=tests/e2e/kind
export KUBECONFIG="$KUBECONFIG_FILE"

say() { echo "kind-e2e: $*" >&2; }

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" > /dev/null || { say "$tool is not on PATH"; exit 2; }
  done
}

python_bin() {
  if [[ -n ${PYTHON:-} ]]; then echo "$PYTHON"
  elif [[ -x .venv/bin/python ]]; then echo .venv/bin/python
  else echo python3
  fi
}

up() {
  need docker kind kubectl helm
  docker info > /dev/null 2>&1 || { say "no Docker engine answers 'docker info'"; exit 2; }
  mkdir -p "$(dirname "$KUBECONFIG_FILE")"
  if ! kind get clusters 2> /dev/null | grep -qx "$CLUSTER"; then
    say "creating kind cluster $CLUSTER"
    kind create cluster --name "$CLUSTER" --config "$KIND_DIR/kind-config.yaml" --wait 180s
  fi
  kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE"

  say "building $IMAGE and loading it into the cluster"
  docker build -t "$IMAGE" .
  kind load docker-image "$IMAGE" --name "$CLUSTER"

  say "installing KubeRay $KUBERAY_VERSION"
  helm repo add kuberay https://ray-project.github.io/kuberay-helm/ --force-update > /dev/null
  helm upgrade --install kuberay-operator kuberay/kuberay-operator --version "$KUBERAY_VERSION" \
    --namespace kuberay-system --create-namespace --wait --timeout 5m

  say "installing MinIO"
  kubectl apply -f "$KIND_DIR/minio.yaml"
  kubectl -n minio rollout status deployment/minio --timeout=5m

  say "installing charts/datajuicer-operator"
  # Helm installs crds/ on the first install only; on a re-run, upgrade the CRD as docs/deploy.md says.
  if kubectl get crd datajuicerjobs.datajuicer.io > /dev/null 2>&1; then
    kubectl apply --server-side --force-conflicts -f charts/datajuicer-operator/crds/
  fi
  helm upgrade --install datajuicer-operator charts/datajuicer-operator \
    --namespace dj-system --create-namespace \
    --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=IfNotPresent \
    --set logLevel=debug --set operator.interval=2 --wait --timeout 5m
  kubectl -n dj-system rollout status deployment/datajuicer-operator --timeout=3m
}

run_tests() {
  need kubectl
  say "running tests/e2e against $CLUSTER"
  DJ_E2E_READY=1 DJ_KIND_CLUSTER="$CLUSTER" DJ_E2E_KUBECONFIG="$KUBECONFIG_FILE" \
    "$(python_bin)" -m pytest -p no:cacheprovider -m e2e tests/e2e -v -rs "$@"
}

diagnose() {
  say "state of the cluster, for the log"
  kubectl get djjobs,rayclusters,pods -A -o wide || true
  kubectl -n dj-system logs deployment/datajuicer-operator --tail=200 || true
  kubectl get events -A --sort-by=.lastTimestamp | tail -60 || true
}

case "${1:-all}" in
  up) up ;;
  test) shift; run_tests "$@" || { diagnose; exit 1; } ;;
  down) need kind; kind delete cluster --name "$CLUSTER" ;;
  all) up; run_tests || { diagnose; exit 1; } ;;
  *) say "usage: $0 [all|up|test|down]"; exit 2 ;;
esac
