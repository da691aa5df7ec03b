"""Two dj-operator replicas with kopf peering, on the real apiserver: only the active one
reconciles (the standby's own metrics show no reconcile, and no job ever has two drivers),
and when the active one is killed the standby takes over within the peering lifetime.

Here in tests/deploy, which runs before the session's cluster-wide test operator starts,
so these two are the only operators watching their namespace."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.operator.helpers import Kubectl, job_manifest, upload_dataset
from tests.support.k8s import LocalCluster, free_port
from tests.support.node_agent import NodeAgent
from tests.support.operator import OperatorProcess
from tests.support.wait import wait_for

from .chart import REPO

pytestmark = [pytest.mark.k8s, pytest.mark.s3]
LIFETIME = 5  # seconds: the handover bound under test is this plus kopf's re-check


class Replica(OperatorProcess):
    def __init__(self, cluster: LocalCluster, log: Path, namespace: str, priority: int) -> None:
        super().__init__(cluster, log)
        self.namespace, self.priority = namespace, priority

    @property
    def command(self) -> list[str]:
        argv = super().command
        argv[argv.index("--all-namespaces")] = f"--namespace={self.namespace}"
        return argv + ["--peering", "dj-ha", "--priority", str(self.priority), "--peering-lifetime", str(LIFETIME)]

    def reconciles(self) -> float:
        """How many reconciles this replica has run, from its own /metrics."""
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == "datajuicer_operator_reconcile_duration_seconds_count")


@pytest.fixture
def ha_namespace(kube_cluster: LocalCluster, kube_namespace: str, s3_env, tmp_path_factory) -> Iterator[str]:
    kube_cluster.kubectl("apply", "-f", str(REPO / "crds" / "kopf.dev_peerings.yaml"))
    kube_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/kopfpeerings.kopf.dev")
    kube_cluster.kubectl("-n", kube_namespace, "apply", "-f", "-", input=json.dumps(
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "dj-ha"}}))
    kube_cluster.kubectl("-n", kube_namespace, "create", "secret", "generic", "s3-creds",
                         f"--from-literal=AWS_ACCESS_KEY_ID={s3_env['AWS_ACCESS_KEY_ID']}",
                         f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_env['AWS_SECRET_ACCESS_KEY']}")
    yield kube_namespace


@pytest.fixture
def agent(kube_cluster: LocalCluster, ha_namespace: str, tmp_path_factory) -> Iterator[NodeAgent]:
    node = NodeAgent(kube_cluster.api_client(), tmp_path_factory.mktemp("ha-node")).start()
    node.adopt(ha_namespace)
    yield node
    node.release(ha_namespace)
    node.stop()


def test_one_replica_works_and_the_other_takes_over_when_it_dies(kube_cluster, chart_crd, kuberay_crd, ha_namespace,
                                                                 agent, s3_env, s3_bucket, tmp_path):
    kc = Kubectl(kube_cluster, ha_namespace)
    active = Replica(kube_cluster, tmp_path / "active.log", ha_namespace, priority=200)
    standby = Replica(kube_cluster, tmp_path / "standby.log", ha_namespace, priority=100)
    standby.start()
    active.start()
    try:
        why = lambda: (f"status: {kc.status('first')} / {kc.status('second')}\n--- active:\n{active.tail(20)}"  # noqa: E731
                       f"\n--- standby:\n{standby.tail(20)}")
        upload_dataset(s3_env, s3_bucket, 80)
        # let the peers see each other before the first job (kopf starts every peer paused)
        wait_for(lambda: len(peers(kube_cluster, ha_namespace)) == 2, 30, "both replicas in the peering object", why)
        kc.apply(job_manifest("first", s3_bucket, s3_env["AWS_ENDPOINT_URL"], rows_per_partition=40, slow=0.5))
        drivers_seen: dict[str, set[str]] = {}

        def finished() -> bool:
            for p in kc.pods():
                if p["metadata"]["labels"].get("datajuicer.io/component") == "driver":
                    drivers_seen.setdefault(p["metadata"]["labels"]["datajuicer.io/job"], set()).add(
                        p["metadata"]["name"])
            return kc.phase("first") in ("Succeeded", "Failed")

        wait_for(finished, 120, "the first job to finish", why)
        assert kc.phase("first") == "Succeeded", why()
        assert drivers_seen == {"first": {"first-driver-1"}} and kc.status("first")["attempt"] == 1
        assert active.reconciles() > 0 and standby.reconciles() == 0, why()

        active.kill()  # SIGKILL: no goodbye in the peering object
        killed = time.monotonic()
        kc.apply(job_manifest("second", s3_bucket, s3_env["AWS_ENDPOINT_URL"], rows_per_partition=40))
        wait_for(lambda: kc.status("second").get("jobId"), LIFETIME + 25, "the standby to accept the new job", why)
        handover = time.monotonic() - killed
        assert handover <= LIFETIME + 25
        wait_for(lambda: kc.phase("second") in ("Succeeded", "Failed"), 120, "the second job to finish", why)
        assert kc.phase("second") == "Succeeded" and standby.reconciles() > 0
        print(f"handover after SIGKILL: {handover:.1f}s (peering lifetime {LIFETIME}s)")
    finally:
        active.stop()
        standby.stop()


def peers(cluster: LocalCluster, namespace: str) -> dict:
    done = cluster.kubectl("-n", namespace, "get", "kopfpeering", "dj-ha", "-o", "json", check=False)
    return (json.loads(done.stdout).get("status") or {}) if done.returncode == 0 else {}
