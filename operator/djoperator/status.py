"""The decision: observed world in, next status and the writes that get there out.   [pure]

Phases:  Pending -> Running -> Succeeded
                 \\-> (driver failed, retryable, under spec.backoffLimit) -> Pending (attempt+1)
                 \\-> Failed
         any active phase + spec.stop -> Stopping -> Stopped -> (stop=false) -> Pending (attempt+1)

Every call is idempotent: it decides from what is observed plus the status (the
operator's only memory), and names children deterministically, so a repeated or
concurrent reconcile repeats the same writes instead of doubling them."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from . import children
from .crd import Job, JobSpec, Status
from .settings import Settings

PENDING, RUNNING, STOPPING, STOPPED, SUCCEEDED, FAILED = (
    "Pending", "Running", "Stopping", "Stopped", "Succeeded", "Failed")
TERMINAL = frozenset({STOPPED, SUCCEEDED, FAILED})  # nothing runs; only a spec change wakes them
WARNING_REASONS = frozenset({"Retrying", "DriverLost"})

# dj-process exit codes (worker/djworker/errors.py) that retrying the driver cannot fix.
PERMANENT_EXITS = {
    2: ("InvalidRecipe", "the recipe or its overrides are invalid; fix spec.recipe and set spec.stop true then false"),
    3: ("BadInput", "the input dataset cannot be read; fix spec.datasetPath or the data"),
    6: ("PartitionsFailed", "partitions kept failing after their retries; see the driver log and event log"),
}
RETRYABLE_EXITS = {
    1: "the driver crashed",
    4: "the job id was locked by another live run",
    5: "storage was unavailable",
    130: "the driver was interrupted",
    137: "the driver was killed (out of memory or evicted)",
}


@dataclass(frozen=True)
class PodState:
    name: str
    attempt: int
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    exit_code: Optional[int] = None
    deleting: bool = False

    @property
    def is_finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True)
class ClusterState:
    name: str
    state: Optional[str] = None
    deleting: bool = False

    @property
    def is_ready(self) -> bool:
        return self.state == "ready" and not self.deleting


@dataclass(frozen=True)
class Observed:
    """One snapshot of a job and what it owns; observe.py builds it, tests build it by hand."""

    name: str
    namespace: str
    uid: str
    now: datetime
    spec: Optional[JobSpec] = None
    spec_error: Optional[str] = None
    status: Status = field(default_factory=Status)
    generation: int = 1
    pods: tuple[PodState, ...] = ()  # every driver pod of this job, any attempt
    cluster: Optional[ClusterState] = None
    present: frozenset[tuple[str, str]] = frozenset()  # (kind, name) of owned ConfigMaps and PVCs
    progress: Optional[dict[str, Any]] = None  # the current driver's GET /progress, if it answered

    @property
    def job(self) -> Job:
        assert self.spec is not None
        return Job(self.name, self.namespace, self.uid, self.spec)

    def pod(self, name: str) -> Optional[PodState]:
        return next((p for p in self.pods if p.name == name), None)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Decision:
    status: dict[str, Any]
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[dict[str, str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    waiting: bool = False  # teardown only: children are still going away


def timestamp(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Optional[str]) -> Optional[datetime]:
    if not value:
        return None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


class _Step:
    """Accumulates one reconcile's decision; only next_status and teardown use it."""

    def __init__(self, o: Observed, settings: Settings) -> None:
        self.o, self.settings = o, settings
        self.old = o.status
        self.st = o.status.model_copy(deep=True)
        self.create: list[dict[str, Any]] = []
        self.delete: list[dict[str, str]] = []

    def set_phase(self, phase: str, reason: str, message: str) -> None:
        self.st.phase, self.st.reason, self.st.message = phase, reason, message

    def delete_pod(self, pod: PodState) -> None:
        if not pod.deleting:
            self.delete.append({"apiVersion": "v1", "kind": "Pod", "namespace": self.o.namespace, "name": pod.name})

    def delete_cluster(self) -> None:
        cluster = self.o.cluster
        if cluster is not None and not cluster.deleting:
            self.delete.append({"apiVersion": "ray.io/v1", "kind": "RayCluster",
                                "namespace": self.o.namespace, "name": cluster.name})

    def decision(self) -> Decision:
        old, st, now = self.old, self.st, self.o.now
        events = []
        if (old.phase, old.reason) != (st.phase, st.reason) and st.phase:
            warn = st.phase == FAILED or st.reason in WARNING_REASONS
            events.append(Event("Warning" if warn else "Normal", st.reason or st.phase, st.message or st.phase))
        if old.phase != st.phase:
            st.last_transition_time = timestamp(now)
        return Decision(status=st.dump(), create=self.create, delete=self.delete, events=events)


def next_status(o: Observed, settings: Settings) -> Decision:
    """What to write next for a live (not deleted) job."""
    step = _Step(o, settings)
    step.st.observed_generation = o.generation
    if o.spec is None:
        _invalid_spec(step)
        return step.decision()
    job, st = o.job, step.st
    st.job_id = job.job_id
    st.attempt = max(st.attempt, 1)
    if job.spec.stop:
        _stop(step)
    elif st.phase == STOPPING and _active_pods(o):
        pass  # stop was withdrawn mid-way: let the driver finish exiting, then resume
    elif st.phase in (STOPPING, STOPPED) or (st.phase == FAILED and st.reason == "InvalidSpec"):
        _resume(step)
    elif st.phase in (SUCCEEDED, FAILED):
        _release_cluster(step)
    else:
        _run(step)
    return step.decision()


def _active_pods(o: Observed) -> list[PodState]:
    return [p for p in o.pods if not p.is_finished]


def _invalid_spec(step: _Step) -> None:
    for pod in _active_pods(step.o):
        step.delete_pod(pod)
    step.delete_cluster()
    step.set_phase(FAILED, "InvalidSpec", step.o.spec_error or "invalid spec")


def _run(step: _Step) -> None:
    o, st, job = step.o, step.st, step.o.job
    name = children.names(job.name, st.attempt)
    pod = o.pod(name.driver)
    if pod is not None and pod.phase == "Succeeded":
        return _succeed(step)
    if pod is not None and pod.phase == "Failed":
        return _driver_failed(step, pod)
    if pod is None and st.driver_pod == name.driver:
        return _driver_failed(step, None)

    recipe, pvc, cluster = (children.recipe_config_map(job), children.state_pvc(job),
                            children.ray_cluster(job, step.settings))
    for child in (recipe, pvc):
        if child is not None and (child["kind"], child["metadata"]["name"]) not in o.present:
            step.create.append(child)
    if cluster is not None:
        st.ray_cluster = name.ray
        if o.cluster is None:
            step.create.append(cluster)
        if o.cluster is None or not o.cluster.is_ready:
            return _wait_for_cluster(step)
    st.waiting_since = None

    if pod is None:
        ready_at = parse_time(st.next_attempt_after)
        if ready_at is not None and o.now < ready_at:
            return  # backing off after a failed attempt; the status already says Retrying
        if recipe is not None and recipe not in step.create:
            step.create.append(recipe)  # refresh: the inline recipe may have changed since the last attempt
        step.create.append(children.driver_pod(job, st.attempt, step.settings))
        st.driver_pod, st.next_attempt_after, st.exit_code = name.driver, None, None
        st.start_time = st.start_time or timestamp(o.now)
        step.set_phase(PENDING, "DriverStarting", f"starting driver {name.driver} (attempt {st.attempt})")
    elif pod.phase == "Running":
        step.set_phase(RUNNING, "DriverRunning", f"driver {name.driver} is processing job {job.job_id}")
        if o.progress is not None:
            st.progress = merged_progress(st.progress, o.progress, o.now)
    else:
        step.set_phase(PENDING, "DriverStarting", f"waiting for driver {name.driver} to start")


def _wait_for_cluster(step: _Step) -> None:
    o, st = step.o, step.st
    since = parse_time(st.waiting_since) or o.now
    st.waiting_since = timestamp(since)
    timeout = o.job.spec.ray.ready_timeout_seconds
    if (o.now - since).total_seconds() > timeout:
        step.delete_cluster()
        st.completion_time = timestamp(o.now)
        return step.set_phase(FAILED, "RayClusterNotReady",
                              f"RayCluster {st.ray_cluster} was not ready within {timeout}s; "
                              "check the KubeRay operator and the cluster's pods")
    state = o.cluster.state if o.cluster else None
    step.set_phase(PENDING, "WaitingForRayCluster",
                   f"waiting for RayCluster {st.ray_cluster} to be ready (state: {state or 'none'})")


def _succeed(step: _Step) -> None:
    st, now = step.st, step.o.now
    st.exit_code, st.completion_time, st.next_attempt_after = 0, timestamp(now), None
    st.progress = completed_progress(st.progress, now)
    step.set_phase(SUCCEEDED, "Completed", f"job {st.job_id} completed in attempt {st.attempt}")
    _release_cluster(step)


def _release_cluster(step: _Step) -> None:
    if step.o.spec is not None and not step.o.spec.ray.keep_after_finish:
        step.delete_cluster()


def retry_delay(failures: int, settings: Settings) -> float:
    """Seconds before the attempt after `failures` failed ones: exponential, capped."""
    return min(settings.retry_base_seconds * 2 ** max(failures - 1, 0), settings.retry_max_seconds)


def _driver_failed(step: _Step, pod: Optional[PodState]) -> None:
    """A driver attempt ended without success: fail for good, or schedule attempt n+1."""
    o, st = step.o, step.st
    code = pod.exit_code if pod is not None else None
    st.exit_code = code
    what = f"driver {st.driver_pod} " + (f"exited with code {code}" if pod is not None else "disappeared")
    if code in PERMANENT_EXITS:
        reason, advice = PERMANENT_EXITS[code]
        st.completion_time = timestamp(o.now)
        step.set_phase(FAILED, reason, f"{what}: {advice}")
        return _release_cluster(step)
    cause = RETRYABLE_EXITS.get(code, "the driver was lost" if pod is None else "the driver failed")
    if st.failures >= o.job.spec.backoff_limit:
        st.completion_time = timestamp(o.now)
        step.set_phase(FAILED, "BackoffLimitExceeded",
                       f"{what} ({cause}) after {st.failures} retries (spec.backoffLimit={o.job.spec.backoff_limit})")
        return _release_cluster(step)
    st.failures += 1
    delay = retry_delay(st.failures, step.settings)
    st.next_attempt_after = timestamp(o.now + timedelta(seconds=delay))
    st.attempt += 1
    step.set_phase(PENDING, "Retrying" if pod is not None else "DriverLost",
                   f"{what} ({cause}); attempt {st.attempt} resumes from the last checkpoint in {delay:g}s "
                   f"(retry {st.failures} of {o.job.spec.backoff_limit})")
    _run(step)


def _stop(step: _Step) -> None:
    """Stop = delete the driver (it gets SIGTERM, checkpoints, exits 130), then the cluster.

    The order matters: the driver needs its Ray cluster while it flushes."""
    o, st = step.o, step.st
    current = o.pod(children.names(o.name, st.attempt).driver)
    if st.phase == SUCCEEDED:
        return _release_cluster(step)  # nothing left to stop
    if current is not None and current.phase == "Succeeded":
        return _succeed(step)  # it finished before the stop landed
    active = _active_pods(o)
    for pod in active:
        step.delete_pod(pod)
    if active:
        return step.set_phase(STOPPING, "StopRequested",
                              f"stopping driver {', '.join(p.name for p in active)}: "
                              "it checkpoints its in-flight partition and exits")
    if current is not None and current.exit_code is not None:
        st.exit_code = current.exit_code
    st.next_attempt_after = None
    if o.cluster is not None:
        step.delete_cluster()
        return step.set_phase(STOPPING, "StopRequested", f"deleting RayCluster {o.cluster.name}")
    if st.phase != STOPPED:
        step.set_phase(STOPPED, "Stopped",
                       f"job {st.job_id} stopped after attempt {st.attempt}; set spec.stop to false to resume "
                       "from the last checkpoint")


def _resume(step: _Step) -> None:
    st = step.st
    st.attempt += 1
    st.failures, st.next_attempt_after, st.exit_code, st.completion_time = 0, None, None, None
    step.set_phase(PENDING, "Resuming", f"resuming job {st.job_id} as attempt {st.attempt}")
    _run(step)


def teardown(o: Observed) -> Decision:
    """The finalizer's decision for a deleted CR: drivers first (graceful, they checkpoint),
    then the cluster; the ConfigMap and PVC are only asked to go. Without garbage
    collection (or with it: ordering matters) the operator deletes its own children."""
    step = _Step(o, Settings())  # settings only steer starting things, which teardown never does
    for pod in o.pods:
        step.delete_pod(pod)
    drivers_running = any(not p.is_finished for p in o.pods)
    if not drivers_running:
        step.delete_cluster()
    retain_pvc = o.spec is not None and o.spec.event_log.retain
    for kind, name in sorted(o.present):
        if kind == "PersistentVolumeClaim" and retain_pvc:
            continue
        step.delete.append({"apiVersion": "v1", "kind": kind, "namespace": o.namespace, "name": name})
    return Decision(status={}, delete=step.delete, waiting=bool(o.pods) or o.cluster is not None)


# -- progress ---------------------------------------------------------------------

def progress_from_endpoint(raw: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The driver's /progress JSON in the CR's camelCase shape; None if it is malformed."""
    try:
        parts, samples = raw.get("partitions") or {}, raw.get("samples") or {}
        out: dict[str, Any] = {
            "status": str(raw.get("status") or "running"),
            "percent": round(float(raw.get("progress_percent") or 0.0), 1),
            "partitions": {k: int(parts.get(k) or 0) for k in ("total", "completed", "failed", "running")},
            "samples": {k: int(samples.get(k) or 0) for k in ("processed", "total")},
            "currentOps": [{"partition": str(k), "op": str(v)}
                           for k, v in sorted((raw.get("current_ops") or {}).items(), key=lambda kv: str(kv[0]))],
        }
        checkpoint = raw.get("last_checkpoint") or {}
        if checkpoint.get("path"):
            out["lastCheckpoint"] = {"path": str(checkpoint["path"]), "time": str(checkpoint.get("time") or "")}
        if raw.get("eta_seconds") is not None:
            out["etaSeconds"] = int(round(float(raw["eta_seconds"])))
        return out
    except (TypeError, ValueError, AttributeError):
        return None


def merged_progress(old: Optional[dict[str, Any]], raw: dict[str, Any], now: datetime) -> Optional[dict[str, Any]]:
    """New progress, stamped `updatedAt` only when it changed (so an idle job's CR stays quiet)."""
    new = progress_from_endpoint(raw)
    if new is None:
        return old
    old_body = {k: v for k, v in (old or {}).items() if k != "updatedAt"}
    if old_body == new:
        return old
    return {**new, "updatedAt": timestamp(now)}


def completed_progress(old: Optional[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """A finished job's progress: the driver exited 0, so every partition completed
    (dj-process exits 6 otherwise), even if the last poll saw less."""
    p = dict(old or {})
    parts = dict(p.get("partitions") or {})
    total = parts.get("total") or 0
    parts.update({"completed": max(total - (parts.get("failed") or 0), parts.get("completed") or 0), "running": 0})
    samples = dict(p.get("samples") or {})
    if samples.get("total"):
        samples["processed"] = samples["total"]
    p.update({"status": "completed", "percent": 100.0, "partitions": parts, "samples": samples,
              "currentOps": [], "etaSeconds": 0, "updatedAt": timestamp(now)})
    return p


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch from old to new: removed keys become null; lists are replaced."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = status_patch(before, value)
            if sub:
                patch[key] = sub
        elif value != before:
            patch[key] = value
    return patch
