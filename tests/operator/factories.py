"""Tiny builders for the operator's core tests: a spec, an observation, a pod."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from djoperator.crd import Status, parse_spec
from djoperator.settings import Settings
from djoperator.observed import ClusterState, Observed, PodState

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
UID = "0123abcd-0000-4000-8000-000000000000"
SETTINGS = Settings(interval=1)

RECIPE = {"dataset_path": "s3://bucket/in.jsonl", "process": [{"whitespace_normalization_mapper": {}}]}
ACCEPTED = {"job_id": "demo-0123abcd", "attempt": 1}


def spec(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"executorType": "default", "recipe": RECIPE, "backoff": {"initialSeconds": 0}}
    raw.update(overrides)
    return raw


def observed(phase: str | None = None, *, raw_spec: dict[str, Any] | None = None, stop: bool = False,
             pods: tuple[PodState, ...] = (), cluster: ClusterState | None = None,
             present: frozenset[tuple[str, str]] | None = None, endpoint: dict[str, Any] | None = None,
             polled: bool | None = None, now: datetime = NOW, new_token: str = "t0k3n", **status: Any) -> Observed:
    """A job already accepted (job id in status) unless job_id=None is passed; `endpoint` is
    what the driver's /progress answered, status fields go in as keywords."""
    raw = dict(raw_spec or spec())
    if stop:
        raw["stop"] = True
    if present is None:
        present = frozenset({("ConfigMap", "demo-recipe"), ("PersistentVolumeClaim", "demo-state"),
                             ("Service", "demo-dashboard")})
        if raw.get("executorType", "ray_partitioned") != "default":
            present |= {("Secret", "demo-ray-auth")}  # made with its cluster
    fields = {**ACCEPTED, **status}
    if fields["job_id"] is None:
        fields.pop("job_id")
    return Observed(name="demo", namespace="ns", uid=UID, now=now, spec=parse_spec(raw),
                    status=Status(phase=phase, **fields), pods=pods, cluster=cluster, present=present,
                    progress=endpoint, progress_polled=endpoint is not None if polled is None else polled,
                    new_token=new_token)


def pod(phase: str, attempt: int = 1, exit_code: int | None = None, deleting: bool = False,
        deadline: datetime | None = None) -> PodState:
    return PodState(name=f"demo-driver-{attempt}", attempt=attempt, phase=phase, exit_code=exit_code,
                    deleting=deleting, deletion_deadline=deadline)
