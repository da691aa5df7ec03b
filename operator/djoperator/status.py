"""The decision: observed world in, next status and the writes that get there out.   [pure]

    Pending -> Provisioning -> Running -> Succeeded
                                  \\-> Retrying (retryable exit, under backoffLimit) -> Provisioning
                                  \\-> Failed (permanent exit, backoffLimit, a deadline)
    any active phase + spec.stop -> Stopping -> Stopped -> (stop=false) -> Provisioning, attempt+1

Every call is idempotent: it decides from what is observed plus the status (the
operator's only memory) and names children deterministically, so a repeated or
concurrent reconcile repeats the same writes instead of doubling them. The first
reconcile only records the job id and child names; nothing is created before that.

Over 300 lines: it is the whole state machine above, one step function per phase;
splitting the phases apart would hide the transitions from each other."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any, Optional

from . import children, exits
from .crd import (ACTIVE, FAILED, PENDING, PROVISIONING, RETRYING, RUNNING, STOPPED, STOPPING, SUCCEEDED,
                  TERMINAL, JobSpec, SpecError, Status, immutable_changes, parse_spec, spec_dump)
from .observed import (CreateFailure, Decision, Event, Observed, PodState, parse_time, scrub, seconds_since,
                       timestamp)
from .progress import conditions, mirror_final, mirror_progress
from .settings import Settings

CREATE_FAILURES = {400: "CreateInvalid", 403: "CreateForbidden", 422: "CreateInvalid"}
STUCK_REASONS = frozenset({*CREATE_FAILURES.values(), "DriverCannotStart"})
WARNING_REASONS = frozenset({*STUCK_REASONS, "StartDeadlineExceeded", "DriverFailed", "DriverLost", "ProgressUnreachable", "DriverCannotStart",
                             "DriverTerminating", "RayClusterLost", "DeadlineExceeded", "ProgressDeadlineExceeded",
                             "InvalidSpec"})



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
        ref = children.pod_ref(self.o.namespace, pod.name)
        if ref in self.delete:
            return
        if not pod.deleting:
            self.delete.append(ref)
        elif pod.deletion_deadline is not None and self.o.now > pod.deletion_deadline + timedelta(
                seconds=self.settings.force_delete_after_seconds):
            self.delete.append({**ref, "gracePeriodSeconds": 0})

    def delete_cluster(self) -> None:
        """The RayCluster, and the Secret that only its members (and the driver) use."""
        cluster = self.o.cluster
        if cluster is not None and not cluster.deleting and not cluster.foreign:
            self.delete.append(children.ray_cluster_ref(self.o.namespace, cluster.name))
            self.delete_ray_auth()

    def delete_ray_auth(self) -> None:
        ref = children.ray_auth_ref(self.o.namespace, self.o.name)
        if ref not in self.delete:
            self.delete.append(ref)

    def spec_valid(self) -> dict[str, Any]:
        """The SpecValid condition: False while the CR's spec cannot be applied (the job goes
        on with the last valid one, status.lastValidSpec); True, with a warning reason, when
        unknown fields were ignored."""
        o = self.o
        if o.spec_error:
            value, reason, message = "False", "InvalidSpec", o.spec_error + (
                "; the job continues on its last valid spec" if self.st.last_valid_spec and self.st.phase not in
                TERMINAL else "")
        elif o.spec_warnings:
            value, reason, message = "True", "UnknownFieldsIgnored", (
                f"ignored fields this operator does not know: {', '.join(o.spec_warnings)} (a typo, or a CRD "
                "newer than the operator)")
        else:
            value, reason, message = "True", "Valid", ""
        before = next((c for c in self.old.conditions or [] if c.get("type") == "SpecValid"), {})
        since = before.get("lastTransitionTime") if before.get("status") == value else None
        return {"type": "SpecValid", "status": value, "reason": reason, "message": message,
                "lastTransitionTime": since or timestamp(o.now), "observedGeneration": o.generation}

    def decision(self) -> Decision:
        if self.old.phase != self.st.phase:
            self.st.last_transition_time = timestamp(self.o.now)
        was = {c.get("type"): c.get("reason") for c in self.old.conditions or []}
        if self.o.spec is not None:
            self.st.dashboard_url = children.dashboard_url(self.o.job, self.settings)
            self.st.ray_dashboard_url = children.ray_dashboard_url(self.o.job)
            self.st.conditions = conditions(self.o, self.st, self.settings)
            now = {c["type"]: c for c in self.st.conditions}
            if now["Progressing"]["reason"] == "ProgressUnreachable" != was.get("Progressing"):
                self.events.append(Event("Warning", "ProgressUnreachable", now["Progressing"]["message"]))
        self.st.conditions = [c for c in self.st.conditions or [] if c.get("type") != "SpecValid"] + [
            self.spec_valid()]
        valid = self.st.conditions[-1]
        if valid["reason"] != was.get("SpecValid") and valid["reason"] in ("InvalidSpec", "UnknownFieldsIgnored"):
            self.events.append(Event("Warning", valid["reason"], valid["message"]))
        return Decision(status=self.st.dump(), create=self.create, delete=self.delete, events=self.events,
                        again=self.again)


def next_status(o: Observed, settings: Settings) -> Decision:
    """What to write next for a live (not deleted) job."""
    o = _effective_spec(o)
    step = _Step(o, settings)
    step.st.observed_generation = o.generation
    st = step.st
    if o.spec_error and st.job_id is not None and st.phase in (SUCCEEDED, FAILED) and not _failed_invalid(st):
        return step.decision()  # a finished job is never touched: the SpecValid condition says what is wrong
    if o.spec is None:
        _invalid_spec(step)
        return step.decision()
    spec = o.spec
    if not o.spec_error:
        st.last_valid_spec = spec_dump(spec)
    if st.job_id is None:
        _accept(step)
    elif st.pending_failure:
        _stop(step)
    elif st.phase in ACTIVE and _deadline_passed(step):
        pass
    elif spec.stop or st.phase == STOPPING:  # a stop that started completes, even if the flag flips back
        _stop(step)
    elif st.phase == STOPPED or _failed_invalid(st):
        _resume(step)
    elif st.phase in (SUCCEEDED, FAILED):
        _finished(step)
    else:
        _run(step)
    return step.decision()


def _failed_invalid(st: Status) -> bool:
    return st.phase == FAILED and st.reason == "InvalidSpec"


def _effective_spec(o: Observed) -> Observed:
    """The spec to act on. An edit that fails validation, or that changes a field fixed per
    job, does not reach a job that has run: it keeps its last valid spec (SpecValid=False
    says why). A job that never had a valid spec fails with InvalidSpec."""
    last = o.status.last_valid_spec
    error = o.spec_error
    if o.spec is not None and o.status.job_id is not None:
        changed = immutable_changes(o.spec, last)
        if o.spec.job_id is not None and o.spec.job_id != o.status.job_id and "spec.jobId" not in changed:
            changed.insert(0, "spec.jobId")
        if changed:
            error = (f"{', '.join(changed)} cannot change once a job is accepted (it would start a different job "
                     "under this name); create a new DataJuicerJob instead")
    if error is None:
        return o
    fallback = None
    if last and not _failed_invalid(o.status):
        try:
            fallback = parse_spec(last)
        except SpecError:
            fallback = None
    if fallback is not None:
        fallback = fallback.model_copy(update={"stop": o.spec.stop}) if o.spec is not None else fallback
    return replace(o, spec=fallback, spec_error=error)


def _finished(step: _Step) -> None:
    """A finished job keeps nothing running, and goes away once its TTL has run out."""
    _release_cluster(step)
    o, st = step.o, step.st
    ttl = o.job.spec.cleanup.ttl_seconds_after_finished
    if ttl is not None and st.completion_time and seconds_since(st.completion_time, o.now) >= ttl:
        step.delete.append(children.job_ref(o.namespace, o.name))
        step.events.append(Event("Normal", "TTLExpired",
                                 f"deleting {o.name}: finished {ttl}s ago (spec.cleanup.ttlSecondsAfterFinished)"))




def _accept(step: _Step) -> None:
    job, st = step.o.job, step.st
    st.job_id, st.attempt = job.job_id, max(st.attempt, 1)
    st.children = {k: v for k, v in children.child_names(job, st.attempt).items() if v}
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
    """No valid spec was ever seen: stop whatever runs (the driver keeps its cluster until
    it has exited), then fail."""
    reason, message = "InvalidSpec", step.o.spec_error or "invalid spec"
    if _stop_drivers(step, reason, message):
        return
    step.delete_cluster()
    step.st.pending_failure = None
    step.set_phase(FAILED, reason, message)


def _stop_drivers(step: _Step, reason: str, message: str) -> bool:
    """Asks every unfinished driver to go (graceful: it checkpoints on its way out);
    True while one is still there, with the job Stopping and the failure pending."""
    o, st = step.o, step.st
    active = _active_pods(o)
    for pod in active:
        step.delete_pod(pod)
    current = o.pod(children.names(o.name, st.attempt).driver)
    if current is not None and current.exit_code is not None:
        st.exit_code = current.exit_code
    if not active:
        return False
    st.pending_failure = {"reason": reason, "message": message}
    step.set_phase(STOPPING, reason, f"{message}; stopping driver {', '.join(p.name for p in active)} first "
                   "(it checkpoints its in-flight partition)")
    return True


def _fail(step: _Step, reason: str, message: str, stop_driver: bool = False) -> None:
    """Fails the job. With stop_driver, a running driver is stopped first and the job is
    Stopping until it is gone: only then is the RayCluster released."""
    if stop_driver and _stop_drivers(step, reason, message):
        return
    step.st.pending_failure = None
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
    limit = spec.start_deadline_seconds
    if st.phase == PROVISIONING and st.starting_since and seconds_since(st.starting_since, o.now) > limit:
        reason = st.reason if st.reason in STUCK_REASONS else "StartDeadlineExceeded"
        _fail(step, reason, f"driver {st.children.get('driverPod') if st.children else ''} did not start within "
              f"{limit}s (spec.startDeadlineSeconds): {st.message or ''}".rstrip(": "), stop_driver=True)
        return True
    limit = spec.progress_deadline_seconds
    if limit is not None and st.phase == RUNNING:
        # The clock starts afresh with each attempt's driver: a resumed or retried job keeps
        # the progress of the attempt before, whose updatedAt may be hours old.
        marks = [t for t in ((st.progress or {}).get("updatedAt"), st.last_transition_time) if t]
        quiet = min((seconds_since(t, o.now) for t in marks), default=0.0)
        if quiet > limit:
            _fail(step, "ProgressDeadlineExceeded",
                  f"driver {st.children.get('driverPod') if st.children else ''} made no progress for "
                  f"{limit}s (spec.progressDeadlineSeconds)", stop_driver=True)
            return True
    return False


def _run(step: _Step) -> None:
    o, st, job = step.o, step.st, step.o.job
    name = children.names(job.name, st.attempt)
    pod = o.pod(name.driver)
    if pod is not None and pod.is_finished and pod.final_progress:
        mirror_final(st, pod.final_progress)  # the counts, even if no poll caught the driver running
    if pod is not None and pod.phase == "Succeeded":
        return _succeed(step)
    if pod is not None and pod.phase == "Failed":
        return _driver_failed(step, pod)
    if pod is None and st.phase == RUNNING:
        return _driver_failed(step, None)
    if job.spec.is_ray and o.cluster is not None and o.cluster.foreign:
        return _fail(step, "RayClusterNameConflict",
                     f"RayCluster {o.cluster.name} exists and is not owned by this job (no label "
                     f"{children.LABEL_JOB_UID}={o.uid}); delete or rename that cluster, or give this job another "
                     "name", stop_driver=True)
    if pod is not None and pod.deleting:
        # Not deleted by us (that happens on stop and failure only): an eviction, or a node
        # controller giving up on a lost node, whose kubelet will never confirm. Past its grace
        # period plus a margin it is force-deleted, and the attempt counts as lost.
        step.delete_pod(pod)
        return step.set_phase(st.phase or PROVISIONING, "DriverTerminating",
                              f"driver {pod.name} is being deleted outside the operator (eviction or a lost node); "
                              f"it is force-deleted {step.settings.force_delete_after_seconds:g}s after its grace "
                              "period if its node does not confirm, then the next attempt starts")
    if job.spec.is_ray and pod is not None and st.phase == RUNNING and (o.cluster is None or o.cluster.deleting):
        return _cluster_lost(step, pod)
    if job.spec.is_ray and o.cluster is not None and not o.cluster.deleting and \
            ("Secret", name.ray_auth) not in o.present:
        # Its members hold the old token: a new Secret needs a new cluster (and the driver,
        # if one runs, a new attempt, as for any lost cluster).
        step.delete_cluster()
        step.events.append(Event("Warning", "RayAuthSecretMissing",
                                 f"Secret {name.ray_auth} is gone; replacing RayCluster {o.cluster.name} "
                                 "with a new one and a new token"))
        return

    older = [p for p in o.pods if p.name != name.driver]
    for p in older:
        step.delete_pod(p)  # never two drivers: attempt n+1 starts only once attempt n is gone
    wanted = {(c["kind"], c["metadata"]["name"]): c
              for c in children.desired_children(job, st.attempt, step.settings, o.new_token)}
    recipe = wanted.get(("ConfigMap", name.recipe))
    for kind in ("ConfigMap", "PersistentVolumeClaim", "Service"):
        for key, child in wanted.items():
            if key[0] == kind and key not in o.present:
                step.create.append(child)
    if job.spec.is_ray:
        if o.cluster is None:  # a new cluster gets a new token (a stop deleted the old one with its cluster)
            step.create += [wanted[("Secret", name.ray_auth)], wanted[("RayCluster", name.ray)]]
        if o.cluster is None or not o.cluster.is_ready:
            return _wait_for_cluster(step)
    st.provisioning_since = None
    desired_hash = wanted[("RayCluster", name.ray)]["metadata"]["annotations"][children.ANNOTATION_CLUSTER_HASH] \
        if job.spec.is_ray else None
    if pod is None and o.cluster is not None and o.cluster.spec_hash not in (None, desired_hash):
        # spec.ray or spec.storage changed: they apply from the next attempt, on a new cluster
        step.delete_cluster()
        return step.set_phase(st.phase if st.phase == RETRYING else PROVISIONING, "ReplacingRayCluster",
                              f"spec.ray or spec.storage changed: replacing RayCluster {o.cluster.name} before "
                              f"attempt {st.attempt}")
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
        step.create.append(wanted[("Pod", name.driver)])
        st.next_attempt_after, st.exit_code = None, None
        st.start_time = st.start_time or timestamp(o.now)
        st.starting_since = st.starting_since or timestamp(o.now)
        if st.phase == PROVISIONING and st.reason in CREATE_FAILURES.values():
            return  # asking again; the status keeps saying why the last create was refused
        step.set_phase(PROVISIONING, "DriverStarting", f"starting driver {name.driver} (attempt {st.attempt})")
    elif pod.phase == "Running":
        st.starting_since = None
        step.set_phase(RUNNING, "DriverRunning", f"driver {name.driver} is processing job {job.job_id}")
        mirror_progress(o, st)
    elif pod.blocked:
        step.set_phase(PROVISIONING, "DriverCannotStart", f"driver {name.driver} cannot start: {pod.blocked}")
    else:
        step.set_phase(PROVISIONING, "DriverStarting", f"starting driver {name.driver} (attempt {st.attempt})")


def create_failed(old: Status, decided: dict[str, Any], failures: list[CreateFailure]) -> tuple[dict[str, Any], list[Event]]:
    """The status after the apiserver refused a create this reconcile decided: the reason
    and message say what was refused and why (a Warning event when that is news); the
    start deadline (or the cluster's ready timeout) ends the job if it persists."""
    st = Status.model_validate(decided)
    failure = failures[0]
    reason = CREATE_FAILURES.get(failure.code, "CreateFailed")
    message = (f"cannot create {failure.kind} {failure.name}: {failure.code} {scrub(failure.message)}; "
               "fix the spec (or the quota or admission policy that refused it)")
    st.reason, st.message = reason, message
    events = [] if (old.reason, old.message) == (reason, message) else [Event("Warning", reason, message)]
    return st.dump(), events


def _wait_for_cluster(step: _Step) -> None:
    o, st = step.o, step.st
    since = parse_time(st.provisioning_since) or o.now
    st.provisioning_since = timestamp(since)
    timeout = o.job.spec.ray.ready_timeout_seconds
    cluster = children.names(o.name, 0).ray
    if (o.now - since).total_seconds() > timeout:
        if st.reason in CREATE_FAILURES.values():
            return _fail(step, st.reason, f"RayCluster {cluster} was not ready within {timeout}s: {st.message}",
                         stop_driver=True)
        return _fail(step, "RayClusterNotReady", f"RayCluster {cluster} was not ready within {timeout}s "
                     "(spec.ray.readyTimeoutSeconds); check the KubeRay operator and the cluster's pods",
                     stop_driver=True)
    state = o.cluster.state if o.cluster else None
    phase = RETRYING if st.phase == RETRYING else PROVISIONING
    if phase == PROVISIONING and st.reason in CREATE_FAILURES.values():
        return  # the cluster's create was refused; the status says why until the ready timeout
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
    if exits.is_permanent(code):
        reason, advice = exits.PERMANENT[code]
        return _fail(step, reason, f"{what}: {advice}")
    cause = exits.cause(code, lost=pod is None)
    if pod is not None:
        step.delete_pod(pod)
    _retry(step, "DriverFailed" if pod is not None else "DriverLost", what, cause)


def _cluster_lost(step: _Step, pod: PodState) -> None:
    """The RayCluster went away under a running driver: stop the driver (it checkpoints what
    it can) and count a failed attempt; the next one gets a new cluster and resumes."""
    what = f"RayCluster {children.names(step.o.name, 0).ray} was deleted while driver {pod.name} ran"
    if step.st.failures >= step.o.job.spec.backoff_limit:
        return _fail(step, "RayClusterLost", f"{what}; no retries left "
                     f"(spec.backoffLimit={step.o.job.spec.backoff_limit})", stop_driver=True)
    step.delete_pod(pod)
    _retry(step, "RayClusterLost", what, "the driver is stopped and the attempt counts as failed")


def _retry(step: _Step, reason: str, what: str, cause: str) -> None:
    """Schedules attempt n+1 after the backoff, or fails once spec.backoffLimit is spent."""
    o, st, spec = step.o, step.st, step.o.job.spec
    if st.failures >= spec.backoff_limit:
        return _fail(step, "BackoffLimitExceeded",
                     f"{what}: {cause}; no retries left (spec.backoffLimit={spec.backoff_limit})")
    st.failures += 1
    delay = backoff_delay(st.failures, spec)
    st.next_attempt_after = timestamp(o.now + timedelta(seconds=delay))
    st.attempt += 1
    st.children = {**(st.children or {}), "driverPod": children.names(o.name, st.attempt).driver}
    step.set_phase(RETRYING, reason,
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
        if current.final_progress:
            mirror_final(st, current.final_progress)  # what the stop left done
    failure = st.pending_failure
    if failure and remaining:
        return step.set_phase(STOPPING, failure["reason"], step.st.message or failure["message"])
    if failure:
        return _fail(step, failure["reason"], failure["message"])
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
        ref = children.core_ref(kind, o.namespace, name)
        if kind == "Secret":
            continue  # the Ray auth Secret goes with the cluster, after the drivers (above)
        if not (kind == "PersistentVolumeClaim" and retain_pvc) and ref not in step.delete:
            step.delete.append(ref)
    return Decision(status={}, delete=step.delete, waiting=bool(o.pods) or o.cluster is not None)

