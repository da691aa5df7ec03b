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

from datetime import timedelta
from typing import Any, Optional

from . import children
from .crd import (ACTIVE, API_VERSION, FAILED, KIND, PENDING, PROVISIONING, RETRYING, RUNNING, STOPPED,
                  STOPPING, SUCCEEDED, TERMINAL, Job, JobSpec)
from .observed import Decision, Event, Observed, PodState, parse_time, seconds_since, timestamp
from .progress import conditions, mirror_progress
from .settings import Settings

WARNING_REASONS = frozenset({"DriverFailed", "DriverLost", "ProgressUnreachable", "DriverCannotStart"})

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
        """The RayCluster, and the Secret that only its members (and the driver) use."""
        cluster = self.o.cluster
        if cluster is not None and not cluster.deleting:
            self.delete.append({"apiVersion": "ray.io/v1", "kind": "RayCluster",
                                "namespace": self.o.namespace, "name": cluster.name})
            self.delete_ray_auth()

    def delete_ray_auth(self) -> None:
        ref = {"apiVersion": "v1", "kind": "Secret", "namespace": self.o.namespace,
               "name": children.names(self.o.name, 0).ray_auth}
        if ref not in self.delete:
            self.delete.append(ref)

    def decision(self) -> Decision:
        if self.old.phase != self.st.phase:
            self.st.last_transition_time = timestamp(self.o.now)
        if self.o.spec is not None:
            self.st.dashboard_url = children.dashboard_url(self.o.job, self.settings)
            self.st.ray_dashboard_url = children.ray_dashboard_url(self.o.job)
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
    if ttl is not None and st.completion_time and seconds_since(st.completion_time, o.now) >= ttl:
        step.delete.append({"apiVersion": API_VERSION, "kind": KIND, "namespace": o.namespace, "name": o.name})
        step.events.append(Event("Normal", "TTLExpired",
                                 f"deleting {o.name}: finished {ttl}s ago (spec.cleanup.ttlSecondsAfterFinished)"))


def needs_timer(spec: dict[str, Any], status: dict[str, Any]) -> bool:
    """Whether the periodic reconcile should visit a job. Terminal jobs have nothing to
    poll (a spec change wakes them) unless a TTL will delete them, or a stop was
    withdrawn while it was still completing (Stopped, but spec.stop is already false)."""
    phase = status.get("phase")
    if phase not in TERMINAL:
        return True
    if phase == STOPPED:
        return not spec.get("stop", False)
    return (spec.get("cleanup") or {}).get("ttlSecondsAfterFinished") is not None


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
    if limit is not None and st.start_time and seconds_since(st.start_time, o.now) > limit:
        _fail(step, "DeadlineExceeded",
              f"job {st.job_id} was active longer than spec.activeDeadlineSeconds={limit}", stop_driver=True)
        return True
    limit = spec.progress_deadline_seconds
    if limit is not None and st.phase == RUNNING:
        last = (st.progress or {}).get("updatedAt") or st.last_transition_time
        if seconds_since(last, o.now) > limit:
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
    for child in (recipe, pvc, children.dashboard_service(job, step.settings)):
        if child is not None and (child["kind"], child["metadata"]["name"]) not in o.present:
            step.create.append(child)
    if cluster is not None:
        if o.cluster is None:  # a new cluster gets a new token (a stop deleted the old one with its cluster)
            step.create += [children.ray_auth_secret(job, o.new_token), cluster]
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
        mirror_progress(o, st)
    elif pod.blocked:
        step.set_phase(PROVISIONING, "DriverCannotStart", f"driver {name.driver} cannot start: {pod.blocked}")
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
    if current is not None and current.phase == "Running":
        mirror_progress(o, st)  # the driver reports the checkpoints it writes on its way out
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
    if st.phase != STOPPED:
        st.checkpoint = final_checkpoint(st.checkpoint, o.now)
    step.set_phase(STOPPED, "Stopped", f"job {st.job_id} stopped after attempt {st.attempt}; set spec.stop "
                   "to false to resume from the last checkpoint")


def final_checkpoint(checkpoint: Optional[dict[str, Any]], now: Any) -> dict[str, Any]:
    """status.checkpoint when a job reaches Stopped: the last checkpoint the driver reported
    (where and when) as the point the next attempt resumes from, and when the stop completed.
    resumable is false when no checkpoint was ever reported (the next attempt starts over)."""
    cp = dict(checkpoint or {})
    cp["stoppedAt"] = timestamp(now)
    cp["resumable"] = bool(cp.get("lastCheckpointPath"))
    if cp["resumable"]:
        cp["finalCheckpointPath"] = cp["lastCheckpointPath"]
        cp["finalCheckpointTime"] = cp.get("lastCheckpointTime") or ""
    else:
        cp.pop("finalCheckpointPath", None)
        cp.pop("finalCheckpointTime", None)
    return cp


def _resume(step: _Step) -> None:
    st = step.st
    st.attempt += 1
    st.failures, st.next_attempt_after, st.exit_code = 0, None, None
    st.completion_time, st.start_time = None, None  # like a resumed Job: deadlines count afresh
    st.children = {**(st.children or {}), "driverPod": children.names(step.o.name, st.attempt).driver}
    step.set_phase(PROVISIONING, "Resuming", f"resuming job {st.job_id} as attempt {st.attempt}")
    _run(step)


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
        if o.spec is None or o.spec.is_ray:  # also when the cluster was never made or is gone
            step.delete_ray_auth()
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
