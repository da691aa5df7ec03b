"""Fixtures for the deploy tests: the chart's CRD on the session apiserver.

These tests start their own cluster-wide dj-operator (with the chart's ServiceAccount), and
so does tests/operator (as admin, for the whole session). Two operators would reconcile the
same jobs, so this directory's tests are moved ahead of every other test: by the time the
admin operator starts, ours has stopped."""
from __future__ import annotations

import json

import pytest

from tests.support.k8s import LocalCluster, wait_for

from .chart import CHART

CRD_NAME = "datajuicerjobs.datajuicer.io"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    ours = [item for item in items if item.nodeid.startswith("tests/deploy/")]
    if ours:
        items[:] = ours + [item for item in items if not item.nodeid.startswith("tests/deploy/")]


def is_established(cluster: LocalCluster, name: str) -> bool:
    done = cluster.kubectl("get", "crd", name, "-o", "json", check=False)
    if done.returncode != 0:
        return False
    conditions = json.loads(done.stdout).get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="session")
def chart_crd(kube_cluster: LocalCluster) -> str:
    """The chart's copy of the DataJuicerJob CRD, applied as `kubectl apply -f` would, Established."""
    kube_cluster.kubectl("apply", "-f", str(CHART / "crds"))
    wait_for(lambda: is_established(kube_cluster, CRD_NAME), what=f"CRD {CRD_NAME} to be Established")
    return CRD_NAME
