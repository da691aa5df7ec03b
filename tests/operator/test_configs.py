"""The example manifests in configs/ work as written, with only the user's edits
(storage endpoint, bucket) applied: `kubectl apply -f` them and the job succeeds."""
from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from djworker.demo_data import write_jsonl
from tests.support.ray import running_ray_head

from tests.support.wait import wait_for

from .helpers import REPO, Kubectl, read_jsonl, upload_dataset
from .test_lifecycle import diagnose

pytestmark = [pytest.mark.k8s, pytest.mark.s3]
EXAMPLE_BUCKET, EXAMPLE_ENDPOINT, EXAMPLE_SECRET = "datajuicer-demo", "http://minio.minio.svc:9000", "dj-s3-credentials"


def as_user_edits(path: Path, bucket: str, endpoint: str) -> str:
    """The example with the two things a user must change: their bucket and endpoint."""
    return path.read_text().replace(f"s3://{EXAMPLE_BUCKET}/", f"s3://{bucket}/").replace(EXAMPLE_ENDPOINT, endpoint)


def local_reference(tmp: Path, recipe: dict, rows: int) -> list[dict]:
    """The same recipe run by dj-process with the default executor on local files."""
    write_jsonl(str(tmp / "in.jsonl"), rows)
    recipe = dict(recipe, dataset_path=str(tmp / "in.jsonl"), export_path=str(tmp / "out.jsonl"),
                  work_dir=str(tmp / "w"), executor_type="default")
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp)}
    done = subprocess.run(["dj-process", "--config", str(tmp / "recipe.yaml"), "--job_id", "ref", "--quiet"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp)
    assert done.returncode == 0, done.stderr[-2000:]
    return [orjson.loads(line) for line in (tmp / "out.jsonl").read_bytes().splitlines() if line]


@pytest.fixture
def kc(kube_cluster, job_namespace) -> Kubectl:
    return Kubectl(kube_cluster, job_namespace)


@pytest.fixture
def example_secret(kc, s3_env) -> str:
    kc("create", "secret", "generic", EXAMPLE_SECRET, f"--from-literal=AWS_ACCESS_KEY_ID={s3_env['AWS_ACCESS_KEY_ID']}",
       f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_env['AWS_SECRET_ACCESS_KEY']}")
    return EXAMPLE_SECRET


def head_pod_env(kc: Kubectl, cluster: dict) -> dict[str, str]:
    """The head container's env as the kubelet would resolve it, Secret references included."""
    out = {}
    for var in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in var:
            out[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            secret = wait_for(lambda: kc.get("secret", ref["name"]), 30, f"Secret {ref['name']}")
            out[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return out


def test_example_job_runs_on_its_ray_cluster(kc, s3_env, s3_bucket, example_secret, node_agent, dj_operator,
                                            tmp_path):
    """Here the test plays KubeRay: once the operator has made the RayCluster, a Ray head starts
    with that cluster's resolved env, and only then is the cluster reported ready. The driver
    attaches at the GCS address; Ray Client (`ray://`) is tested in tests/worker/test_ray.py."""
    manifest = as_user_edits(REPO / "configs" / "job.yaml", s3_bucket, s3_env["AWS_ENDPOINT_URL"])
    upload_dataset(s3_env, s3_bucket, 300, key="input/demo.jsonl")
    why = lambda: diagnose(kc, "demo-cleaning", dj_operator, node_agent)  # noqa: E731
    node_agent.rayclusters_ready = False
    try:
        kc("apply", "-f", "-", input=manifest)
        cluster = wait_for(lambda: kc.get("raycluster", "demo-cleaning-ray"), 30, "the RayCluster", why)
        assert [g["groupName"] for g in cluster["spec"]["workerGroupSpecs"]] == ["small"]
        env = head_pod_env(kc, cluster)
        head_env = {e["name"]: e for e in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
        assert head_env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == EXAMPLE_SECRET
        assert env["RAY_AUTH_MODE"] == "token" and len(env["RAY_AUTH_TOKEN"]) == 64
        with running_ray_head(env) as head:
            node_agent.ray_address, node_agent.rayclusters_ready = head.gcs_address, True
            done = wait_for(lambda: (s := kc.status("demo-cleaning")).get("phase") in ("Succeeded", "Failed") and s,
                            180, "the example job to finish", why)
    finally:
        node_agent.ray_address, node_agent.rayclusters_ready = None, True
    assert done["phase"] == "Succeeded", why()
    pod = node_agent.logs[(kc.namespace, "demo-cleaning-driver-1")]
    assert pod.exists()
    recipe = yaml.safe_load(manifest)["spec"]["recipe"]
    assert read_jsonl(s3_env, recipe["export_path"]) == local_reference(tmp_path, recipe, 300)
    assert "3/3" in kc("get", "djjobs").stdout
    wait_for(lambda: kc.get("raycluster", "demo-cleaning-ray") is None, 30, "the RayCluster to be deleted", why)
    wait_for(lambda: kc.get("secret", "demo-cleaning-ray-auth") is None, 30, "its auth Secret to be deleted", why)


def test_example_with_a_configmap_recipe_succeeds(kc, s3_env, s3_bucket, example_secret, node_agent, dj_operator,
                                                  tmp_path):
    manifest = as_user_edits(REPO / "configs" / "job-configmap-recipe.yaml", s3_bucket, s3_env["AWS_ENDPOINT_URL"])
    upload_dataset(s3_env, s3_bucket, 120, key="input/demo.jsonl")
    kc("apply", "-f", "-", input=manifest)
    why = lambda: diagnose(kc, "cleaning-from-configmap", dj_operator, node_agent)  # noqa: E731
    done = wait_for(lambda: (s := kc.status("cleaning-from-configmap")).get("phase") in ("Succeeded", "Failed") and s,
                    90, "the job to finish", why)
    assert done["phase"] == "Succeeded", why()
    assert done["children"]["recipeConfigMap"] == "cleaning-recipe"
    recipe = yaml.safe_load(next(d for d in yaml.safe_load_all(manifest) if d["kind"] == "ConfigMap")
                            ["data"]["recipe.yaml"])
    assert read_jsonl(s3_env, recipe["export_path"]) == local_reference(tmp_path, recipe, 120)
