"""End to end on a kind cluster: our image, KubeRay's operator, MinIO and our Helm chart,
driven with kubectl exactly as docs/deploy.md tells a user to. scripts/kind-e2e.sh brings the
cluster up (this module does it too when run alone); without kind or a running Docker
engine every test here skips and says which is missing."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

import orjson
import pytest
import yaml

from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[3]
CLUSTER = os.environ.get("DJ_KIND_CLUSTER", "dj-e2e")
KUBECONFIG = Path(os.environ.get("DJ_E2E_KUBECONFIG", Path.home() / ".kube" / f"{CLUSTER}.kubeconfig"))
S3_FROM_HOST = "http://127.0.0.1:30900"  # MinIO's NodePort, mapped by kind-config.yaml
MINIO_USER, MINIO_PASSWORD = "dj-e2e", "dj-e2e-not-a-secret"  # tests/e2e/kind/minio.yaml
EXAMPLE = REPO / "configs" / "job.yaml"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]


def missing_prerequisite() -> Optional[str]:
    for tool in ("docker", "kind", "kubectl", "helm"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not on PATH"
    if subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode != 0:
        return "no Docker engine is running (`docker info` failed)"
    return None


class Kubectl:
    def __init__(self, namespace: Optional[str] = None) -> None:
        self.namespace = namespace

    def __call__(self, *args: str, input: Optional[str] = None, check: bool = True,
                 timeout: float = 300) -> subprocess.CompletedProcess[str]:
        ns = ["-n", self.namespace] if self.namespace else []
        done = subprocess.run(["kubectl", f"--kubeconfig={KUBECONFIG}", *ns, *args], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done

    def get(self, kind: str, name: str) -> Optional[dict[str, Any]]:
        done = self("get", kind, name, "-o", "json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def status(self, name: str) -> dict[str, Any]:
        return (self.get("djjob", name) or {}).get("status") or {}

    def pods(self) -> list[str]:
        return self("get", "pods", "-o", "name").stdout.split()

    def describe(self, name: str) -> str:
        return self("describe", "djjob", name, check=False).stdout[-4000:]


@pytest.fixture(scope="module")
def cluster() -> Kubectl:
    reason = missing_prerequisite()
    if reason:
        pytest.skip(f"the kind e2e needs Docker and kind: {reason}")
    if not os.environ.get("DJ_E2E_READY"):
        subprocess.run(["bash", str(REPO / "scripts" / "kind-e2e.sh"), "up"], check=True, timeout=3600)
    return Kubectl()


@pytest.fixture
def kc(cluster: Kubectl) -> Iterator[Kubectl]:
    """A fresh namespace with the S3 credentials Secret configs/job.yaml references."""
    namespace = f"dj-e2e-{uuid.uuid4().hex[:8]}"
    cluster("create", "namespace", namespace)
    kc = Kubectl(namespace)
    kc("create", "secret", "generic", "dj-s3-credentials", f"--from-literal=AWS_ACCESS_KEY_ID={MINIO_USER}",
       f"--from-literal=AWS_SECRET_ACCESS_KEY={MINIO_PASSWORD}")
    yield kc
    kc("delete", "djjobs", "--all", "--timeout=5m", check=False)  # through the operator's finalizer
    cluster("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def s3(cluster: Kubectl):
    import s3fs

    fs = s3fs.S3FileSystem(key=MINIO_USER, secret=MINIO_PASSWORD, client_kwargs={"endpoint_url": S3_FROM_HOST})
    wait_for(lambda: fs.ls("") is not None, 120, "MinIO to answer on the host port", every=2)
    if not fs.exists("datajuicer-demo"):
        fs.mkdir("datajuicer-demo")
    return fs


def example_job() -> dict[str, Any]:
    return next(d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d and d["kind"] == "DataJuicerJob")


def upload(s3, uri: str, n: int) -> list[dict[str, Any]]:
    from djworker.demo_data import rows

    data = list(rows(n))
    with s3.open(uri.removeprefix("s3://"), "wb") as out:
        for row in data:
            out.write(orjson.dumps(row) + b"\n")
    return data


def read_output(s3, uri: str) -> list[dict[str, Any]]:
    s3.invalidate_cache()
    return [orjson.loads(line) for line in s3.cat(uri.removeprefix("s3://")).splitlines() if line]


def local_reference(tmp: Path, recipe: dict[str, Any], data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same recipe run by dj-process on this machine, uninterrupted, on local files."""
    (tmp / "in.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in data))
    local = dict(recipe, dataset_path=str(tmp / "in.jsonl"), export_path=str(tmp / "out.jsonl"),
                 work_dir=str(tmp / "work"), executor_type="default")
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(local))
    subprocess.run([str(Path(sys.executable).parent / "dj-process"), "--config", str(tmp / "recipe.yaml"),
                    "--job_id", "reference", "--quiet"], cwd=tmp, check=True, capture_output=True, timeout=900)
    return [orjson.loads(line) for line in (tmp / "out.jsonl").read_bytes().splitlines() if line]


def finished(kc: Kubectl, name: str, timeout: float) -> None:
    """Waits for a terminal phase (failing fast, with kubectl describe, if it is Failed),
    then for the Complete condition as a user would."""
    wait_for(lambda: kc.status(name).get("phase") in ("Succeeded", "Failed"), timeout, f"{name} to finish",
             lambda: kc.describe(name), every=2)
    assert kc.status(name)["phase"] == "Succeeded", kc.describe(name)
    kc("wait", "--for=condition=Complete", f"djjob/{name}", "--timeout=60s")


def test_example_job_runs_to_completion_on_kuberay(kc, s3, tmp_path):
    job = example_job()
    name, recipe = job["metadata"]["name"], job["spec"]["recipe"]
    data = upload(s3, recipe["dataset_path"], 5000)
    kc("apply", "-f", str(EXAMPLE))  # unchanged, as the docs say
    why = lambda: kc.describe(name)  # noqa: E731

    def mid_run_or_over() -> dict[str, Any]:
        s = kc.status(name)
        parts = s.get("partitions") or {}
        mid_run = s.get("phase") == "Running" and 1 <= parts.get("completed", 0) < parts.get("total", 0)
        return s if mid_run or s.get("phase") in ("Succeeded", "Failed") else {}

    seen = wait_for(mid_run_or_over, 900, "the job Running with its progress in status", why, every=2)
    assert seen["phase"] == "Running", f"no progress seen before the end: {seen}"
    assert kc.get("raycluster", seen["children"]["rayCluster"]), "the job runs on its own RayCluster"
    finished(kc, name, 1200)
    done = kc.status(name)
    assert done["phase"] == "Succeeded" and done["partitions"]["completed"] == done["partitions"]["total"]
    assert done["progress"]["percent"] == 100.0
    assert read_output(s3, recipe["export_path"]) == local_reference(tmp_path, recipe, data)
    assert "Succeeded" in kc("get", "djjobs").stdout
    wait_for(lambda: kc.get("raycluster", seen["children"]["rayCluster"]) is None, 300,
             "the RayCluster to be deleted after the job", why, every=2)


def test_stop_mid_run_then_resume_gives_the_uninterrupted_output(kc, s3, tmp_path):
    job = example_job()
    name = "stop-resume"
    job["metadata"]["name"] = name
    recipe = job["spec"]["recipe"]
    recipe.update(project_name=name, dataset_path="s3://datajuicer-demo/input/stop-resume.jsonl",
                  export_path="s3://datajuicer-demo/output/stop-resume.jsonl")
    data = upload(s3, recipe["dataset_path"], 30000)  # 300 partitions: long enough to stop mid-run
    kc("apply", "-f", "-", input=yaml.safe_dump(job))
    why = lambda: kc.describe(name)  # noqa: E731

    wait_for(lambda: (s := kc.status(name)).get("phase") == "Running"
             and 1 <= (s.get("partitions") or {}).get("completed", 0) < s["partitions"]["total"],
             900, "the job to be mid-run", why, every=2)
    kc("patch", "djjob", name, "--type", "merge", "-p", '{"spec":{"stop":true}}')
    wait_for(lambda: kc.status(name).get("phase") in ("Stopped", "Succeeded", "Failed"), 600, "Stopped", why, every=2)
    kc("wait", "--for=condition=Stopped", f"djjob/{name}", "--timeout=60s")
    stopped = kc.status(name)
    assert stopped["phase"] == "Stopped" and stopped["partitions"]["completed"] < stopped["partitions"]["total"]
    wait_for(lambda: not [p for p in kc.pods() if "driver" in p], 300, "the driver pod to be gone", why, every=2)
    wait_for(lambda: kc.get("raycluster", stopped["children"]["rayCluster"]) is None, 300,
             "the RayCluster to be deleted on stop", why, every=2)

    kc("patch", "djjob", name, "--type", "merge", "-p", '{"spec":{"stop":false}}')
    finished(kc, name, 1800)
    done = kc.status(name)
    assert done["phase"] == "Succeeded" and done["attempt"] == 2, why()
    assert read_output(s3, recipe["export_path"]) == local_reference(tmp_path, recipe, data)
