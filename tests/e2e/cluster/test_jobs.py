"""configs/job.yaml on the local one-node cluster, driven with kubectl as docs/deploy.md
tells a user: the operator (a Pod from the project's image) makes the driver Pod and, for
the Ray executors, a RayCluster whose Pods the KubeRay stand-in starts; the real scheduler,
kubelet, garbage collector, kube-proxy and DNS do the rest. S3 is moto on the bridge."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.support.artifacts import JobFiles
from tests.support.wait import wait_for

from .conftest import REPO, Kubectl, state_volume

EXAMPLE = REPO / "configs" / "job.yaml"
SMALL = {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}}

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def job_manifest(kc: Kubectl, s3_endpoint: str, name: str, executor: str) -> dict[str, Any]:
    """configs/job.yaml with what a user changes for this cluster: the S3 endpoint and bucket,
    the executor, and resource requests that fit a 2-core node (the limits, and so Ray's
    --num-cpus, stay)."""
    job = next(d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d and d["kind"] == "DataJuicerJob")
    job["metadata"]["name"] = name
    spec = job["spec"]
    text = json.dumps(spec).replace("s3://datajuicer-demo/", f"s3://{kc.bucket}/")
    spec = json.loads(text)
    spec["executorType"] = executor
    spec["recipe"]["project_name"] = name
    spec["storage"]["s3"]["endpointUrl"] = s3_endpoint
    spec["driver"]["resources"] = copy.deepcopy(SMALL)
    spec["ray"]["head"]["resources"] = copy.deepcopy(SMALL)
    for group in spec["ray"]["workerGroups"]:
        group["resources"] = copy.deepcopy(SMALL)
    spec["backoff"] = {"initialSeconds": 1, "maxSeconds": 5}
    job["spec"] = spec
    return job


def upload(s3: Any, uri: str, n: int) -> list[dict[str, Any]]:
    from djworker.demo_data import rows

    data = list(rows(n))
    with s3.open(uri.removeprefix("s3://"), "wb") as out:
        out.write(b"".join(orjson.dumps(row) + b"\n" for row in data))
    return data


def read_output(s3: Any, uri: str) -> list[dict[str, Any]]:
    s3.invalidate_cache()
    return [orjson.loads(line) for line in s3.cat(uri.removeprefix("s3://")).splitlines() if line]


def local_reference(tmp: Path, recipe: dict[str, Any], data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same recipe run uninterrupted by dj-process on this machine, on local files."""
    (tmp / "in.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in data))
    local = dict(recipe, dataset_path=str(tmp / "in.jsonl"), export_path=str(tmp / "out.jsonl"),
                 work_dir=str(tmp / "work"), executor_type="default")
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(local))
    subprocess.run([str(Path(sys.executable).parent / "dj-process"), "--config", str(tmp / "recipe.yaml"),
                    "--job_id", "reference", "--quiet"], cwd=tmp, check=True, capture_output=True, timeout=900)
    return [orjson.loads(line) for line in (tmp / "out.jsonl").read_bytes().splitlines() if line]


def events(state_dir: Path, job_id: str) -> list[dict[str, Any]]:
    """The engine's event log on the job's state volume (events/ and work/ under the operator's mount)."""
    return JobFiles.of(job_id, state_dir / "work", state_dir / "events").events()


def mid_run(kc: Kubectl, name: str) -> dict[str, Any]:
    """The job's status once `kubectl get djjobs` shows it Running with 0 < progress < 100."""
    s = kc.status(name)
    parts = s.get("partitions") or {}
    if s.get("phase") in ("Succeeded", "Failed", "Stopped"):
        raise AssertionError(f"{name} ended ({s.get('phase')}) before any progress was seen mid-run: {s}")
    if s.get("phase") == "Running" and 0 < parts.get("completed", 0) < parts.get("total", 0):
        row = kc("get", "djjobs", name, "--no-headers").stdout
        assert "Running" in row, row
        return s
    return {}


def finished(kc: Kubectl, name: str, timeout: float) -> dict[str, Any]:
    wait_for(lambda: kc.status(name).get("phase") in ("Succeeded", "Failed"), timeout, f"{name} to finish",
             lambda: kc.describe(name), every=1)
    done = kc.status(name)
    assert done["phase"] == "Succeeded", kc.describe(name)
    kc("wait", "--for=condition=Complete", f"djjob/{name}", "--timeout=60s")
    return done


def job_pods(kc: Kubectl, name: str) -> list[dict[str, Any]]:
    return [p for p in kc.pods() if p["metadata"].get("deletionTimestamp") is None]


def assert_non_root(kc: Kubectl, pod: dict[str, Any]) -> None:
    """Every container of the pod runs with a non-zero uid, asked of the running process."""
    for container in pod["spec"]["containers"]:
        uid = kc("exec", pod["metadata"]["name"], "-c", container["name"], "--", "id", "-u").stdout.strip()
        assert uid.isdigit() and int(uid) != 0, (pod["metadata"]["name"], container["name"], uid)


def test_operator_runs_as_a_pod_from_the_built_image(operator: Kubectl, cluster: Kubectl):
    (pod,) = [p for p in operator.pods() if p["status"]["phase"] == "Running"]
    container = pod["spec"]["containers"][0]
    assert container["image"].startswith("datajuicer-ft")
    assert pod["spec"]["serviceAccountName"] == "datajuicer-operator"
    assert_non_root(operator, pod)
    logs = operator("logs", pod["metadata"]["name"]).stdout  # the kubelet's log endpoint answers
    assert logs is not None


@pytest.mark.parametrize("executor", ["default", "ray_partitioned"])
def test_job_runs_stops_resumes_and_matches_a_local_run(kc: Kubectl, s3, s3_endpoint, tmp_path, executor):
    name = f"cleaning-{executor.replace('_', '-')}"
    job = job_manifest(kc, s3_endpoint, name, executor)
    recipe = job["spec"]["recipe"]
    state_dir = state_volume(kc, f"{name}-state", tmp_path / "pv")
    data = upload(s3, recipe["dataset_path"], 20000)
    kc("apply", "-f", "-", input=yaml.safe_dump(job))
    why = lambda: kc.describe(name)  # noqa: E731

    seen = wait_for(lambda: mid_run(kc, name), 900, f"{name} Running with 0 < progress < 100", why, every=1)
    assert 0 < seen["progress"]["percent"] < 100
    driver = wait_for(lambda: [p for p in job_pods(kc, name) if "driver" in p["metadata"]["name"]
                               and p["status"]["phase"] == "Running"], 60, "the driver pod", why, every=1)[0]
    assert_non_root(kc, driver)
    if executor != "default":
        rc = seen["children"]["rayCluster"]
        ray_pods = kc.pods(f"ray.io/cluster={rc}")
        assert {p["metadata"]["labels"]["ray.io/node-type"] for p in ray_pods} == {"head", "worker"}
        for pod in ray_pods:
            assert_non_root(kc, pod)

    kc("patch", "djjob", name, "--type", "merge", "-p", '{"spec":{"stop":true}}')
    wait_for(lambda: kc.status(name).get("phase") in ("Stopped", "Succeeded", "Failed"), 300, f"{name} Stopped", why,
             every=1)
    stopped = kc.status(name)
    assert stopped["phase"] == "Stopped", why()
    wait_for(lambda: not [p for p in job_pods(kc, name) if "driver" in p["metadata"]["name"]], 180,
             "the driver pod to be gone", why, every=1)
    first = events(state_dir, stopped["jobId"])
    done_before = {e["partition_id"] for e in first if e["event_type"] == "PARTITION_COMPLETE"}
    assert done_before, "the stopped attempt completed (and flushed) some partitions"
    assert "JOB_STOPPED" in [e["event_type"] for e in first], "the kubelet's SIGTERM reached dj-process"
    if executor != "default":
        wait_for(lambda: not kc.pods(f"ray.io/cluster={stopped['children']['rayCluster']}"), 300,
                 "the RayCluster's pods to be garbage-collected on stop", why, every=1)

    kc("patch", "djjob", name, "--type", "merge", "-p", '{"spec":{"stop":false}}')
    done = finished(kc, name, 1200)
    assert done["attempt"] == 2 and done["partitions"]["completed"] == done["partitions"]["total"]
    resumed = events(state_dir, stopped["jobId"])[len(first):]
    kinds = [e["event_type"] for e in resumed]
    assert "JOB_RESUMED" in kinds, kinds[:5]
    skipped = {e["partition_id"] for e in resumed if e["event_type"] == "PARTITION_SKIPPED"}
    redone = {e["partition_id"] for e in resumed if e["event_type"] == "PARTITION_COMPLETE"}
    assert done_before <= skipped and not (done_before & redone)
    assert read_output(s3, recipe["export_path"]) == local_reference(tmp_path, recipe, data)

    kc("delete", "djjob", name, "--timeout=180s")
    wait_for(lambda: not job_pods(kc, name) and not kc.json("get", "configmaps,secrets,pvc,rayclusters,services",
                                                              "-l", f"datajuicer.io/job={name}")["items"],
             180, "every child of the deleted job to be gone", why, every=1)


def test_killed_driver_container_is_retried_once_and_resumes(kc: Kubectl, s3, s3_endpoint, tmp_path):
    name = "killed-driver"
    job = job_manifest(kc, s3_endpoint, name, "default")
    recipe = job["spec"]["recipe"]
    state_dir = state_volume(kc, f"{name}-state", tmp_path / "pv")
    data = upload(s3, recipe["dataset_path"], 20000)
    kc("apply", "-f", "-", input=yaml.safe_dump(job))
    why = lambda: kc.describe(name)  # noqa: E731
    seen = wait_for(lambda: mid_run(kc, name), 900, f"{name} mid-run", why, every=1)
    driver = f"{name}-driver-1"
    containers = kc.docker("ps", "-q", "--filter", f"label=io.kubernetes.pod.name={driver}",
                           "--filter", "label=io.kubernetes.container.name=driver").stdout.split()
    assert len(containers) == 1, containers
    kc.docker("kill", containers[0])
    done = finished(kc, name, 1200)
    assert done["attempt"] == 2, "exactly one retry"
    log = events(state_dir, seen["jobId"])
    assert [e["event_type"] for e in log].count("JOB_RESUMED") == 1
    assert read_output(s3, recipe["export_path"]) == local_reference(tmp_path, recipe, data)
