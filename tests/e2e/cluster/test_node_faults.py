"""Faults of the node itself, on the local one-node cluster, each mid-job on the default
executor: the kubelet restarted, Docker restarted (every container dies) and the node
lost (NotReady, its pods evicted after their short tolerations) and back. Each job's
export must equal one local uninterrupted run of the same recipe and data (computed once
for the module): no row lost, none duplicated.

The components are restarted by scripts/local-cluster.sh (`restart`, `stop`, `up`), by
the pids it recorded; every test leaves the cluster up, its node Ready and untainted."""
from __future__ import annotations

import subprocess
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.support.wait import wait_for

from .conftest import OPERATOR_NAMESPACE, RELEASE, SCRIPT, Kubectl, state_volume
from .test_jobs import events, finished, job_manifest, local_reference, mid_run, read_output, upload

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROWS = 20000
UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"


def local_cluster(*args: str) -> None:
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def node_name(kc: Kubectl) -> str:
    (node,) = [n for n in kc.json("get", "nodes")["items"] if not n["metadata"]["name"].startswith("dj-e2e-")]
    return node["metadata"]["name"]


def healthy(cluster: Kubectl) -> None:
    """Every component up, the node Ready and untainted, the operator rolled out."""
    local_cluster("up")
    name = node_name(cluster)
    wait_for(lambda: not [t for t in cluster.json("get", "node", name)["spec"].get("taints") or []
                         if t["key"] in (UNREACHABLE, NOT_READY)], 120, f"node {name} untainted", every=1)
    Kubectl(cluster.env, OPERATOR_NAMESPACE)("rollout", "status", f"deployment/{RELEASE}", "--timeout=300s")


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """The uninterrupted local run's rows, keyed by the recipe (every job here has the same)."""
    return {}


def start_job(kc: Kubectl, s3, s3_endpoint: str, tmp_path: Path, name: str, **driver: Any) -> tuple[dict, Path, list]:
    job = job_manifest(kc, s3_endpoint, name, "default")
    job["spec"]["driver"].update(driver)
    state_dir = state_volume(kc, f"{name}-state", tmp_path / "pv")
    data = upload(s3, job["spec"]["recipe"]["dataset_path"], ROWS)
    kc("apply", "-f", "-", input=yaml.safe_dump(job))
    return job, state_dir, data


def expected(reference: dict, tmp_path: Path, job: dict, data: list) -> list:
    recipe = dict(job["spec"]["recipe"], project_name="reference")
    key = yaml.safe_dump({k: v for k, v in recipe.items() if k not in ("dataset_path", "export_path")})
    if key not in reference:
        reference[key] = local_reference(tmp_path, recipe, data)
    return reference[key]


def job_events(kc: Kubectl, name: str) -> list[str]:
    """The reasons of the Kubernetes Events on the DataJuicerJob, oldest first."""
    items = kc.json("get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return [e["reason"] for e in sorted(items, key=lambda e: e.get("lastTimestamp") or e["metadata"]["creationTimestamp"])]


def assert_exactly_once(kc, s3, job, state_dir, job_id, want, attempts: int) -> None:
    kinds = [e["event_type"] for e in events(state_dir, job_id)]
    assert kinds.count("JOB_RESUMED") == attempts - 1, kinds[-10:]
    assert kinds[-1] == "JOB_COMPLETE", kinds[-10:]
    assert read_output(s3, job["spec"]["recipe"]["export_path"]) == want


def test_kubelet_restart_mid_job_leaves_it_running_with_its_status_current(kc: Kubectl, cluster: Kubectl, s3,
                                                                          s3_endpoint, tmp_path, reference):
    name = "kubelet-restart"
    job, state_dir, data = start_job(kc, s3, s3_endpoint, tmp_path, name)
    why = lambda: kc.describe(name)  # noqa: E731
    seen = wait_for(lambda: mid_run(kc, name), 900, f"{name} mid-run", why, every=1)
    before = kc.get("pod", f"{name}-driver-1")
    try:
        local_cluster("restart", "kubelet")
    finally:
        healthy(cluster)
    # the operator keeps polling the driver over the pod network: the status moves on
    moved = wait_for(lambda: (s := kc.status(name)).get("phase") == "Succeeded"
                     or (s.get("partitions") or {}).get("completed", 0) > seen["partitions"]["completed"],
                     300, f"{name}'s status to move on after the kubelet restart", why, every=1)
    assert moved
    after = kc.get("pod", f"{name}-driver-1")
    if after is not None:  # the same container, never restarted
        assert after["metadata"]["uid"] == before["metadata"]["uid"]
        assert after["status"]["containerStatuses"][0]["restartCount"] == 0
    done = finished(kc, name, 900)
    assert done["attempt"] == 1 and done["partitions"]["completed"] == done["partitions"]["total"]
    assert not {"DriverFailed", "DriverLost", "DriverTerminating"} & set(job_events(kc, name))
    assert_exactly_once(kc, s3, job, state_dir, seen["jobId"], expected(reference, tmp_path, job, data), 1)


def test_docker_restart_kills_the_driver_and_the_retry_resumes_exactly_once(kc: Kubectl, cluster: Kubectl, s3,
                                                                            s3_endpoint, tmp_path, reference):
    name = "docker-restart"
    job, state_dir, data = start_job(kc, s3, s3_endpoint, tmp_path, name)
    why = lambda: kc.describe(name)  # noqa: E731
    seen = wait_for(lambda: mid_run(kc, name), 900, f"{name} mid-run", why, every=1)
    try:
        local_cluster("restart", "dockerd")  # every container on the node dies, the operator's too
    finally:
        healthy(cluster)
    done = finished(kc, name, 900)
    assert done["attempt"] == 2, "exactly one retry"
    assert "DriverFailed" in job_events(kc, name), job_events(kc, name)
    assert_exactly_once(kc, s3, job, state_dir, seen["jobId"], expected(reference, tmp_path, job, data), 2)


@pytest.fixture
def peer_node(cluster: Kubectl) -> Iterator[str]:
    """A second, always-Ready Node (no kubelet: its Lease is renewed from here; tainted so
    nothing is scheduled on it). The node controller evicts only while some node of the zone
    is Ready: with every node lost it assumes a control-plane fault and evicts nothing."""
    name = "dj-e2e-peer"
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "spec": {"taints": [{"key": "datajuicer.io/e2e-peer", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "lastHeartbeatTime": now, "lastTransitionTime": now}]}}
    cluster("create", "-f", "-", input=yaml.safe_dump(node))
    stop = threading.Event()

    def renew() -> None:
        while not stop.is_set():
            now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": name, "namespace": "kube-node-lease"},
                     "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now}}
            cluster("apply", "-f", "-", input=yaml.safe_dump(lease), check=False)
            stop.wait(5)

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    try:
        yield name
    finally:
        stop.set()
        renewer.join(timeout=30)
        cluster("delete", "node", name, "--wait=false", check=False)
        cluster("delete", "lease", name, "-n", "kube-node-lease", "--wait=false", check=False)


def mark_not_ready(cluster: Kubectl, node: str) -> None:
    """What the node controller writes once a kubelet has been silent for its grace period."""
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(cluster.env["KUBECONFIG"]))
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    api.patch_node_status(node, {"status": {"conditions": [
        {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting "
         "node status.", "lastHeartbeatTime": now, "lastTransitionTime": now}]}})


def test_lost_node_evicts_the_driver_and_the_job_resumes_when_it_returns(kc: Kubectl, cluster: Kubectl, s3,
                                                                        s3_endpoint, tmp_path, reference,
                                                                        peer_node: str):
    name = "node-lost"
    short = [{"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}
             for key in (UNREACHABLE, NOT_READY)]
    job, state_dir, data = start_job(kc, s3, s3_endpoint, tmp_path, name, terminationGracePeriodSeconds=20,
                                     scheduling={"tolerations": short})
    why = lambda: kc.describe(name)  # noqa: E731
    seen = wait_for(lambda: mid_run(kc, name), 900, f"{name} mid-run", why, every=1)
    node = node_name(cluster)
    driver = f"{name}-driver-1"
    tolerated = {t["key"]: t.get("tolerationSeconds") for t in kc.get("pod", driver)["spec"]["tolerations"]}
    assert tolerated.get(UNREACHABLE) == 2 and tolerated.get(NOT_READY) == 2, tolerated
    try:
        local_cluster("stop", "kubelet")  # the node's agent is gone; its containers run on
        mark_not_ready(cluster, node)
        wait_for(lambda: [t for t in cluster.json("get", "node", node)["spec"].get("taints") or []
                         if t["key"] == UNREACHABLE and t["effect"] == "NoExecute"], 60,
                 f"the node controller to taint {node} unreachable", why, every=1)
        wait_for(lambda: (kc.get("pod", driver) or {}).get("metadata", {}).get("deletionTimestamp"), 60,
                 "the driver's eviction after its 2 s toleration", why, every=1)
        assert "TaintManagerEviction" in [e["reason"] for e in kc.json("get", "events")["items"]
                                          if e["involvedObject"]["name"] == driver]
        assert kc.status(name)["attempt"] == 1
    finally:
        healthy(cluster)  # the node returns: the kubelet stops the evicted driver (it checkpoints)
    done = finished(kc, name, 900)
    assert done["attempt"] == 2, "exactly one retry, after the node came back"
    reasons = job_events(kc, name)
    assert "DriverTerminating" in reasons and ({"DriverFailed", "DriverLost"} & set(reasons)), reasons
    assert_exactly_once(kc, s3, job, state_dir, seen["jobId"], expected(reference, tmp_path, job, data), 2)
