"""Fixtures for the deploy tests: the chart's CRD on the session apiserver.

These tests start their own cluster-wide dj-operator (with the chart's ServiceAccount), and
so does tests/operator (as admin, for the whole session). Two operators would reconcile the
same jobs, so this directory's tests are moved ahead of every other test: by the time the
admin operator starts, ours has stopped."""
from __future__ import annotations

import pytest

from tests.support.k8s import LocalCluster
from tests.support.wait import wait_for

from .chart import CHART, CRD_NAME, is_established


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    ours = [item for item in items if item.nodeid.startswith("tests/deploy/")]
    if ours:
        items[:] = ours + [item for item in items if not item.nodeid.startswith("tests/deploy/")]


@pytest.fixture(scope="session")
def chart_crd(kube_cluster: LocalCluster) -> str:
    """The chart's copy of the DataJuicerJob CRD, applied as `kubectl apply -f` would, Established."""
    kube_cluster.kubectl("apply", "-f", str(CHART / "crds"))
    wait_for(lambda: is_established(kube_cluster, CRD_NAME), 60, f"CRD {CRD_NAME} to be Established")
    return CRD_NAME
