"""What the operator's shell tests do as a user would: kubectl and S3 objects (waiting: tests.support.wait)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import orjson
import yaml

from djworker.demo_data import rows as demo_rows
from tests.support.artifacts import JobFiles
from tests.support.k8s import LocalCluster

REPO = Path(__file__).resolve().parents[2]

OPS = [
    {"clean_links_mapper": {}},
    {"clean_email_mapper": {}},
    {"whitespace_normalization_mapper": {}},
    {"text_length_filter": {"min_len": 30, "max_len": 2000}},
]


def state_volume_job(volume: Path, job_id: str) -> JobFiles:
    """A job's files on its state volume, as the operator mounts it (/dj/state: events/ and work/)."""
    return JobFiles.of(job_id, volume / "work", volume / "events")


def s3fs_client(s3_env: dict[str, str]):
    import s3fs
    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_env["AWS_ENDPOINT_URL"]},
                             key=s3_env["AWS_ACCESS_KEY_ID"], secret=s3_env["AWS_SECRET_ACCESS_KEY"])


def upload_dataset(s3_env: dict[str, str], bucket: str, n: int, key: str = "in/data.jsonl") -> str:
    fs = s3fs_client(s3_env)
    with fs.open(f"{bucket}/{key}", "wb") as out:
        for row in demo_rows(n):
            out.write(orjson.dumps(row) + b"\n")
    return f"s3://{bucket}/{key}"


def read_jsonl(s3_env: dict[str, str], uri: str) -> list[dict[str, Any]]:
    fs = s3fs_client(s3_env)
    fs.invalidate_cache()
    return [orjson.loads(line) for line in fs.cat(uri.removeprefix("s3://")).splitlines() if line]


def s3_keys(s3_env: dict[str, str], prefix_uri: str) -> list[str]:
    fs = s3fs_client(s3_env)
    fs.invalidate_cache()
    try:
        return fs.find(prefix_uri.removeprefix("s3://"))
    except FileNotFoundError:
        return []


def job_manifest(name: str, bucket: str, endpoint: str, *, rows_per_partition: int = 50, slow: float = 0.0,
                 secret: str = "s3-creds", **spec: Any) -> dict[str, Any]:
    """A DataJuicerJob over s3://bucket/in/data.jsonl with the default executor.

    `slow` adds the test-only slow_mapper (seconds per partition) so a test can watch
    progress or stop the job mid-run; the driver loads it via DJ_EXTRA_OP_MODULES."""
    process = list(OPS) + ([{"slow_mapper": {"seconds": slow}}] if slow else [])
    body: dict[str, Any] = {
        "executorType": "default",
        "recipe": {
            "project_name": name,
            "dataset_path": f"s3://{bucket}/in/data.jsonl",
            "export_path": f"s3://{bucket}/out/{name}.jsonl",
            "np": 1,
            "partition": {"size": rows_per_partition},
            "process": process,
        },
        "checkpointDir": f"s3://{bucket}/checkpoints",
        "checkpoint": {"strategy": "every_n_ops", "nOps": 2},
        "storage": {"s3": {"endpointUrl": endpoint, "secretRef": {"name": secret}}},
        "driver": {"terminationGracePeriodSeconds": 20, "env": [
            {"name": "DJ_EXTRA_OP_MODULES", "value": "tests.support.test_ops"},
            {"name": "PYTHONPATH", "value": str(REPO)},
        ]},
        "backoff": {"initialSeconds": 0},
    }
    body.update(spec)
    return {"apiVersion": "datajuicer.io/v1alpha1", "kind": "DataJuicerJob",
            "metadata": {"name": name}, "spec": body}


class Kubectl:
    """kubectl in one namespace, returning parsed JSON where that is what a test wants."""

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace

    def __call__(self, *args: str, input: Optional[str] = None, check: bool = True):
        return self.cluster.kubectl("-n", self.namespace, *args, input=input, check=check)

    def apply(self, manifest: dict[str, Any]) -> None:
        self("apply", "-f", "-", input=yaml.safe_dump(manifest))

    def get(self, kind: str, name: Optional[str] = None) -> Any:
        done = self("get", kind, *([name] if name else []), "-o", "json", check=False)
        if done.returncode != 0:
            return None
        data = json.loads(done.stdout)
        return data["items"] if name is None else data

    def job(self, name: str) -> dict[str, Any]:
        return self.get("djjob", name) or {}

    def status(self, name: str) -> dict[str, Any]:
        return self.job(name).get("status") or {}

    def phase(self, name: str) -> Optional[str]:
        return self.status(name).get("phase")

    def pods(self) -> list[dict[str, Any]]:
        return self.get("pods") or []

    def events(self, name: str) -> list[dict[str, Any]]:
        items = self.get("events") or []
        return [e for e in items if e["involvedObject"].get("name") == name]

    def patch_stop(self, name: str, stop: bool) -> None:
        self("patch", "djjob", name, "--type", "merge", "-p", json.dumps({"spec": {"stop": stop}}))
