"""The decision: observed world in, next status and the writes that get there out.   [pure]

    Pending -> Provisioning -> Running -> Succeeded
                                  \\-> Retrying (retryable exit, under backoffLimit) -> Provisioning
                                  \\-> Failed (permanent exit, backoffLimit, a deadline)
    any active phase + spec.stop -> Stopping -> Stopped -> (stop=false) -> Provisioning, attempt+1

Every call is idempotent: it decides from what is observed plus the status (the
operator's only memory) and names children deterministically, so a repeated or
concurrent reconcile repeats the same writes instead of doubling them. The first
reconcile only records the job id and child names; nothing is created before that."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from . import children
from .crd import KIND, API_VERSION, Job, JobSpec, Status
from .settings import Settings

PENDING, PROVISIONING, RUNNING, RETRYING = "Pending", "Provisioning", "Running", "Retrying"
STOPPING, STOPPED, SUCCEEDED, FAILED = "Stopping", "Stopped", "Succeeded", "Failed"
ACTIVE = frozenset({PENDING, PROVISIONING, RUNNING, RETRYING})
TERMINAL = frozenset({STOPPED, SUCCEEDED, FAILED})  # nothing runs; only a spec change (or a TTL) acts
WARNING_REASONS = frozenset({"DriverFailed", "DriverLost", "ProgressUnreachable"})

# dj-process exit codes (worker/djworker/errors.py) that retrying the driver cannot fix.
PERMANENT_EXITS = {
    2: ("InvalidRecipe", "the recipe or its overrides are invalid; fix it, then set spec.stop true and back to false"),
    3: ("BadInput", "the input dataset cannot be read; fix spec.datasetPath or the data"),
    6: ("PartitionsFailed", "partitions kept failing after their retries; see the driver log and the event log"),
}
RETRYABLE_EXITS = {
    1: "the driver crashed",
    4: "the job id was locked by another live run",
    5: "storage was unavailable",
    130: "the driver was interrupted",
    137: "the driver was killed (SIGKILL: out of memory, or its node went away)",
    143: "the driver was terminated (SIGTERM)",
}


@dataclass(frozen=True)
class PodState:
    name: str
    attempt: int
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    exit_code: Optional[int] = None
    deleting: bool = False
    deletion_deadline: Optional[datetime] = None  # metadata.deletionTimestamp: end of the grace period
    message: Optional[str] = None  # the container's termination reason/message

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
    progress_polled: bool = False  # a poll was attempted (so progress=None means it failed)

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
    delete: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    again: bool = False  # reconcile again right away (the status had to be written first)
    waiting: bool = False  # teardown only: children are still going away


def timestamp(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Optional[str]) -> Optional[datetime]:
    if not value:
        return None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def _seconds_since(value: Optional[str], now: datetime) -> float:
    then = parse_time(value)
    return 0.0 if then is None else (now - then).total_seconds()


class _Step:
    """Accumulates one reconcile's decision; only the functions below use it."""

    def __init__(self, o: Observed, settings: Settings) -> None:
        self.o, self.settings = o, settings
        self.old = o.status
        self.st = o.status.model_copy(deep=True)
        self.create: list[dict[str, Any]] = []
        self.delete: list[dict[str, Any]] = []
        self.events: list[Event] = []
        self.again = False

    def set_phase(self, phase: str, reason: str, message: str) -> None:
        """Moves the status on; each change of phase or reason is one Kubernetes Event,
        including intermediate ones within a single reconcile."""
        if (self.st.phase, self.st.reason) != (phase, reason):
            warn = phase == FAILED or reason in WARNING_REASONS
            self.events.append(Event("Warning" if warn else "Normal", reason, message))
        self.st.phase, self.st.reason, self.st.message = phase, reason, message

    def delete_pod(self, pod: PodState) -> None:
        """Graceful delete; a pod still there past its grace period (plus a margin) is
        force-deleted, as for a lost node, so stop and deletion stay time-bounded."""
        ref: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "namespace": self.o.namespace, "name": pod.name}
        if not pod.deleting:
            self.delete.append(ref)
        elif pod.deletion_deadline is not None and self.o.now > pod.deletion_deadline + timedelta(
                seconds=self.settings.force_delete_after_seconds):
            self.delete.append({**ref, "gracePeriodSeconds": 0})

    def delete_cluster(self) -> None:
        cluster = self.o.cluster
        if cluster is not None and not cluster.deleting:
            self.delete.append({"apiVersion": "ray.io/v1", "kind": "RayCluster",
                                "namespace": self.o.namespace, "name": cluster.name})

    def decision(self) -> Decision:
        if self.old.phase != self.st.phase:
            self.st.last_transition_time = timestamp(self.o.now)
        if self.o.spec is not None:
            self.st.conditions = conditions(self.o, self.st, self.settings)
            was = {c.get("type"): c.get("reason") for c in self.old.conditions or []}
            now = {c["type"]: c for c in self.st.conditions}
            if now["Progressing"]["reason"] == "ProgressUnreachable" != was.get("Progressing"):
                self.events.append(Event("Warning", "ProgressUnreachable", now["Progressing"]["message"]))
        return Decision(status=self.st.dump(), create=self.create, delete=self.delete, events=self.events,
                        again=self.again)


def next_status(o: Observed, settings: Settings) -> Decision:
    """What to write next for a live (not deleted) job."""
    step = _Step(o, settings)
    step.st.observed_generation = o.generation
    if o.spec is None:
        _invalid_spec(step)
        return step.decision()
    st, spec = step.st, o.spec
    if st.job_id is None:
        _accept(step)
    elif st.phase in ACTIVE and _deadline_passed(step):
        pass
    elif spec.stop or st.phase == STOPPING:  # a stop that started completes, even if the flag flips back
        _stop(step)
    elif st.phase == STOPPED or (st.phase == FAILED and st.reason == "InvalidSpec"):
        _resume(step)
    elif st.phase in (SUCCEEDED, FAILED):
        _finished(step)
    else:
        _run(step)
    return step.decision()


def _finished(step: _Step) -> None:
    """A finished job keeps nothing running, and goes away once its TTL has run out."""
    _release_cluster(step)
    o, st = step.o, step.st
    ttl = o.job.spec.cleanup.ttl_seconds_after_finished
    if ttl is not None and st.completion_time and _seconds_since(st.completion_time, o.now) >= ttl:
        step.delete.append({"apiVersion": API_VERSION, "kind": KIND, "namespace": o.namespace, "name": o.name})
        step.events.append(Event("Normal", "TTLExpired",
                                 f"deleting {o.name}: finished {ttl}s ago (spec.cleanup.ttlSecondsAfterFinished)"))


def child_names(job: Job, attempt: int) -> dict[str, Any]:
    """status.children: what this attempt owns or mounts, by name."""
    n, spec = children.names(job.name, attempt), job.spec
    log = spec.event_log
    return {
        "driverPod": n.driver,
        "rayCluster": n.ray if spec.is_ray else None,
        "recipeConfigMap": spec.recipe_config_map.name if spec.recipe_config_map else n.recipe,
        "eventLogClaim": None if log.empty_dir else (log.claim_name or n.state),
    }


def _accept(step: _Step) -> None:
    job, st = step.o.job, step.st
    st.job_id, st.attempt = job.job_id, max(st.attempt, 1)
    st.children = {k: v for k, v in child_names(job, st.attempt).items() if v}
    st.event_log = {"path": f"{children.EVENTS_DIR}/{job.job_id}/event_logs",
                    **({"claimName": st.children["eventLogClaim"]} if "eventLogClaim" in st.children else
                       {"emptyDir": True})}
    if job.spec.checkpoint_location:
        st.checkpoint = {"location": job.spec.checkpoint_location}
    step.set_phase(PENDING, "Accepted", f"job id {job.job_id}; children: {', '.join(st.children.values())}")
    step.again = True  # names are in status before anything is created


def _active_pods(o: Observed) -> list[PodState]:
    return [p for p in o.pods if not p.is_finished]


def _invalid_spec(step: _Step) -> None:
    for pod in _active_pods(step.o):
        step.delete_pod(pod)
    step.delete_cluster()
    step.set_phase(FAILED, "InvalidSpec", step.o.spec_error or "invalid spec")


def _fail(step: _Step, reason: str, message: str, stop_driver: bool = False) -> None:
    if stop_driver:
        for pod in _active_pods(step.o):
            step.delete_pod(pod)  # graceful: the driver still checkpoints on its way out
    step.st.completion_time, step.st.next_attempt_after = timestamp(step.o.now), None
    step.set_phase(FAILED, reason, message)
    _release_cluster(step)


def _deadline_passed(step: _Step) -> bool:
    o, st, spec = step.o, step.st, step.o.job.spec
    limit = spec.active_deadline_seconds
    if limit is not None and st.start_time and _seconds_since(st.start_time, o.now) > limit:
        _fail(step, "DeadlineExceeded",
              f"job {st.job_id} was active longer than spec.activeDeadlineSeconds={limit}", stop_driver=True)
        return True
    limit = spec.progress_deadline_seconds
    if limit is not None and st.phase == RUNNING:
        last = (st.progress or {}).get("updatedAt") or st.last_transition_time
        if _seconds_since(last, o.now) > limit:
            _fail(step, "ProgressDeadlineExceeded",
                  f"driver {st.children.get('driverPod') if st.children else ''} made no progress for "
                  f"{limit}s (spec.progressDeadlineSeconds)", stop_driver=True)
            return True
    return False


def _run(step: _Step) -> None:
    o, st, job = step.o, step.st, step.o.job
    name = children.names(job.name, st.attempt)
    pod = o.pod(name.driver)
    if pod is not None and pod.phase == "Succeeded":
        return _succeed(step)
    if pod is not None and pod.phase == "Failed":
        return _driver_failed(step, pod)
    if pod is None and st.phase == RUNNING:
        return _driver_failed(step, None)

    older = [p for p in o.pods if p.name != name.driver]
    for p in older:
        step.delete_pod(p)  # never two drivers: attempt n+1 starts only once attempt n is gone
    recipe, pvc, cluster = (children.recipe_config_map(job), children.state_pvc(job),
                            children.ray_cluster(job, step.settings))
    for child in (recipe, pvc):
        if child is not None and (child["kind"], child["metadata"]["name"]) not in o.present:
            step.create.append(child)
    if cluster is not None:
        if o.cluster is None:
            step.create.append(cluster)
        if o.cluster is None or not o.cluster.is_ready:
            return _wait_for_cluster(step)
    st.provisioning_since = None
    if st.phase == RETRYING and older:
        return step.set_phase(RETRYING, st.reason or "DriverFailed", st.message or "")
    if older:
        return step.set_phase(PROVISIONING, "WaitingForOldDriver",
                              f"waiting for {', '.join(p.name for p in older)} to be gone before starting {name.driver}")

    if pod is None:
        ready_at = parse_time(st.next_attempt_after)
        if ready_at is not None and o.now < ready_at:
            return  # backing off; the status already says Retrying and why
        if recipe is not None and recipe not in step.create:
            step.create.append(recipe)  # refresh: the inline recipe may have changed since the last attempt
        step.create.append(children.driver_pod(job, st.attempt, step.settings))
        st.next_attempt_after, st.exit_code = None, None
        st.start_time = st.start_time or timestamp(o.now)
        step.set_phase(PROVISIONING, "DriverStarting", f"starting driver {name.driver} (attempt {st.attempt})")
    elif pod.phase == "Running":
        step.set_phase(RUNNING, "DriverRunning", f"driver {name.driver} is processing job {job.job_id}")
        _mirror_progress(step)
    else:
        step.set_phase(PROVISIONING, "DriverStarting", f"starting driver {name.driver} (attempt {st.attempt})")


def _wait_for_cluster(step: _Step) -> None:
    o, st = step.o, step.st
    since = parse_time(st.provisioning_since) or o.now
    st.provisioning_since = timestamp(since)
    timeout = o.job.spec.ray.ready_timeout_seconds
    cluster = children.names(o.name, 0).ray
    if (o.now - since).total_seconds() > timeout:
        return _fail(step, "RayClusterNotReady", f"RayCluster {cluster} was not ready within {timeout}s "
                     "(spec.ray.readyTimeoutSeconds); check the KubeRay operator and the cluster's pods")
    state = o.cluster.state if o.cluster else None
    phase = RETRYING if st.phase == RETRYING else PROVISIONING
    reason = st.reason if phase == RETRYING else "WaitingForRayCluster"
    message = st.message if phase == RETRYING else f"waiting for RayCluster {cluster} to be ready (state: {state or 'none'})"
    step.set_phase(phase, reason or "WaitingForRayCluster", message or "")


def _mirror_progress(step: _Step) -> None:
    """Copies the driver's progress into status, changing nothing when nothing changed."""
    o, st = step.o, step.st
    if o.progress is None:
        if o.progress_polled:
            st.progress = {**(st.progress or {}), "unreachableSince": (st.progress or {}).get("unreachableSince")
                           or timestamp(o.now)}
        return
    fields = progress_fields(o.progress)
    if fields is None:
        return
    body = {k: v for k, v in (st.progress or {}).items() if k not in ("updatedAt", "unreachableSince")}
    changed = (body != fields["progress"] or st.partitions != fields["partitions"]
               or st.samples != fields["samples"])
    st.partitions, st.samples = fields["partitions"], fields["samples"]
    st.progress = {**fields["progress"], "updatedAt": timestamp(o.now) if changed
                   else (st.progress or {}).get("updatedAt", timestamp(o.now))}
    st.checkpoint = {**(st.checkpoint or {}), **fields["checkpoint"]}


def progress_fields(raw: dict[str, Any]) -> Optional[dict[str, dict[str, Any]]]:
    """The driver's /progress JSON as status sections; None if it is malformed."""
    try:
        parts, samples = raw.get("partitions") or {}, raw.get("samples") or {}
        partitions = {k: int(parts.get(k) or 0) for k in ("total", "completed", "failed", "running")}
        progress: dict[str, Any] = {
            "percent": round(float(raw.get("progress_percent") or 0.0), 1),
            "partitionsDone": f"{partitions['completed']}/{partitions['total']}",
            "currentOps": [{"partition": str(k), "op": str(v)}
                           for k, v in sorted((raw.get("current_ops") or {}).items(), key=lambda kv: str(kv[0]))],
        }
        if raw.get("eta_seconds") is not None:
            progress["etaSeconds"] = int(round(float(raw["eta_seconds"])))
        checkpoint: dict[str, Any] = {}
        last = raw.get("last_checkpoint") or {}
        if last.get("path"):
            checkpoint = {"lastCheckpointPath": str(last["path"]), "lastCheckpointTime": str(last.get("time") or "")}
        return {"partitions": partitions,
                "samples": {k: int(samples.get(k) or 0) for k in ("processed", "total")},
                "progress": progress, "checkpoint": checkpoint}
    except (TypeError, ValueError, AttributeError):
        return None


def _succeed(step: _Step) -> None:
    st, now = step.st, step.o.now
    st.exit_code, st.completion_time, st.next_attempt_after = 0, timestamp(now), None
    # Exit 0 means every partition completed (dj-process exits 6 otherwise), even if the last poll saw less.
    parts = dict(st.partitions or {})
    if parts.get("total"):
        parts.update(completed=parts["total"] - (parts.get("failed") or 0), running=0)
        st.partitions = parts
    if (st.samples or {}).get("total"):
        st.samples = {**st.samples, "processed": st.samples["total"]}
    st.progress = {"percent": 100.0, "partitionsDone": f"{parts.get('completed', 0)}/{parts.get('total', 0)}",
                   "currentOps": [], "etaSeconds": 0, "updatedAt": timestamp(now)}
    step.set_phase(SUCCEEDED, "Completed", f"job {st.job_id} completed in attempt {st.attempt}")
    _release_cluster(step)


def _release_cluster(step: _Step) -> None:
    if step.o.spec is not None and not step.o.spec.cleanup.keep_ray_cluster:
        step.delete_cluster()


def backoff_delay(failures: int, spec: JobSpec) -> float:
    """Seconds before the attempt after `failures` failed ones: exponential, capped."""
    return min(spec.backoff.initial_seconds * 2 ** max(failures - 1, 0), spec.backoff.max_seconds)


def _driver_failed(step: _Step, pod: Optional[PodState]) -> None:
    """A driver attempt ended without success: fail for good, or schedule attempt n+1."""
    o, st, spec = step.o, step.st, step.o.job.spec
    code = pod.exit_code if pod is not None else None
    st.exit_code = code
    driver = children.names(o.name, st.attempt).driver
    what = f"driver {driver} " + (f"exited with code {code}" if pod is not None else "disappeared")
    if pod is not None and pod.message:
        what += f" ({pod.message})"
    if code in PERMANENT_EXITS:
        reason, advice = PERMANENT_EXITS[code]
        return _fail(step, reason, f"{what}: {advice}")
    cause = RETRYABLE_EXITS.get(code, "the driver was lost" if pod is None else "the driver failed")
    if st.failures >= spec.backoff_limit:
        return _fail(step, "BackoffLimitExceeded",
                     f"{what}: {cause}; no retries left (spec.backoffLimit={spec.backoff_limit})")
    if pod is not None:
        step.delete_pod(pod)
    st.failures += 1
    delay = backoff_delay(st.failures, spec)
    st.next_attempt_after = timestamp(o.now + timedelta(seconds=delay))
    st.attempt += 1
    st.children = {**(st.children or {}), "driverPod": children.names(o.name, st.attempt).driver}
    step.set_phase(RETRYING, "DriverFailed" if pod is not None else "DriverLost",
                   f"{what}: {cause}; attempt {st.attempt} resumes from the last checkpoint in {delay:g}s "
                   f"(retry {st.failures} of {spec.backoff_limit})")


def _stop(step: _Step) -> None:
    """Stop = delete the driver (it gets SIGTERM, checkpoints, exits 130), wait until it
    is gone, then delete the cluster: the driver needs its Ray cluster while it flushes."""
    o, st = step.o, step.st
    current = o.pod(children.names(o.name, st.attempt).driver)
    if st.phase == SUCCEEDED:
        return _release_cluster(step)  # nothing left to stop
    if current is not None and current.phase == "Succeeded":
        return _succeed(step)  # it finished before the stop landed
    remaining = list(o.pods)  # finished ones too: a stopped job owns no driver pod
    for pod in remaining:
        step.delete_pod(pod)
    if current is not None and current.exit_code is not None:
        st.exit_code = current.exit_code
    if remaining:
        return step.set_phase(STOPPING, "StopRequested",
                              f"stopping driver {', '.join(p.name for p in remaining)}: "
                              "it checkpoints its in-flight partition and exits")
    st.next_attempt_after = None
    if o.cluster is not None:
        step.delete_cluster()
        return step.set_phase(STOPPING, "StopRequested", f"deleting RayCluster {o.cluster.name}")
    step.set_phase(STOPPED, "Stopped", f"job {st.job_id} stopped after attempt {st.attempt}; set spec.stop "
                   "to false to resume from the last checkpoint")


def _resume(step: _Step) -> None:
    st = step.st
    st.attempt += 1
    st.failures, st.next_attempt_after, st.exit_code = 0, None, None
    st.completion_time, st.start_time = None, None  # like a resumed Job: deadlines count afresh
    st.children = {**(st.children or {}), "driverPod": children.names(step.o.name, st.attempt).driver}
    step.set_phase(PROVISIONING, "Resuming", f"resuming job {st.job_id} as attempt {st.attempt}")
    _run(step)


def conditions(o: Observed, st: Status, settings: Settings) -> list[dict[str, Any]]:
    """The standard conditions, each keeping its lastTransitionTime while its status holds."""
    spec = o.spec
    assert spec is not None
    driver = o.pod(children.names(o.name, st.attempt).driver)
    if not spec.is_ray:
        cluster = ("True", "NotRequired", f"executor {spec.executor_type} runs in the driver pod")
    elif o.cluster is not None and o.cluster.is_ready:
        cluster = ("True", "RayClusterReady", f"RayCluster {o.cluster.name} is ready")
    else:
        cluster = ("False", "RayClusterNotReady" if o.cluster else "NoRayCluster",
                   f"RayCluster state: {o.cluster.state if o.cluster else 'absent'}")
    running = driver is not None and driver.phase == "Running" and not driver.deleting
    driver_c = ("True", "PodRunning", f"driver {driver.name} is running") if running else (
        "False", f"Pod{driver.phase}" if driver else "NoDriver", f"driver phase: {driver.phase if driver else 'none'}")
    unreachable = _seconds_since((st.progress or {}).get("unreachableSince"), o.now)
    if st.phase in ACTIVE and (st.progress or {}).get("unreachableSince") and unreachable > settings.progress_grace_seconds:
        progressing = ("False", "ProgressUnreachable", f"the driver's /progress has not answered for {unreachable:.0f}s")
    elif st.phase in ACTIVE:
        progressing = ("True", st.reason or st.phase, st.message or "")
    else:
        progressing = ("False", st.reason or str(st.phase), st.message or "")
    table = {
        "ClusterReady": cluster,
        "DriverRunning": driver_c,
        "Progressing": progressing,
        "Stopped": ("True", "Stopped", st.message or "") if st.phase == STOPPED else ("False", "NotStopped", ""),
        "Complete": ("True", "Completed", st.message or "") if st.phase == SUCCEEDED else ("False", "NotComplete", ""),
        "Failed": ("True", st.reason or "Failed", st.message or "") if st.phase == FAILED else ("False", "NotFailed", ""),
    }
    old = {c.get("type"): c for c in (o.status.conditions or [])}
    out = []
    for kind, (value, reason, message) in table.items():
        before = old.get(kind) or {}
        since = before.get("lastTransitionTime") if before.get("status") == value else None
        out.append({"type": kind, "status": value, "reason": reason, "message": message,
                    "lastTransitionTime": since or timestamp(o.now)})
    return out


def teardown(o: Observed, settings: Settings) -> Decision:
    """The finalizer's decision for a deleted CR: drivers first (graceful, they checkpoint;
    force-deleted past their grace period), then the cluster; the ConfigMap and PVC are
    only asked to go. With no garbage collector, or with one (ordering matters), the
    operator deletes its own children."""
    step = _Step(o, settings)
    for pod in o.pods:
        step.delete_pod(pod)
    if not any(not p.is_finished for p in o.pods):
        step.delete_cluster()
    retain_pvc = o.spec is not None and o.spec.event_log.retain
    for kind, name in sorted(o.present):
        if not (kind == "PersistentVolumeClaim" and retain_pvc):
            step.delete.append({"apiVersion": "v1", "kind": kind, "namespace": o.namespace, "name": name})
    return Decision(status={}, delete=step.delete, waiting=bool(o.pods) or o.cluster is not None)


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
