from datetime import timedelta

import pytest

from djoperator.crd import parse_spec, parse_status
from djoperator.observed import ClusterState, Observed
from djoperator.progress import progress_fields
from djoperator.handlers import needs_timer
from djoperator.kube import status_patch
from djoperator.status import backoff_delay, next_status, teardown

from .factories import NOW, SETTINGS, UID, observed, pod, spec

RAY = spec(executorType="ray_partitioned")
RUNNING = dict(attempt=1, children={"driverPod": "demo-driver-1"})


def kinds(items):
    return [(c["kind"], c["metadata"]["name"] if "metadata" in c else c["name"]) for c in items]


def carried(decision, **changes):
    """The status a decision wrote, as the next observation's status fields."""
    st = parse_status(decision.status)
    fields = {k: v for k, v in st.model_dump().items() if v is not None}
    fields.update(changes)
    return fields


def cond(decision, kind):
    return next(c for c in decision.status["conditions"] if c["type"] == kind)


def test_first_reconcile_records_job_id_and_child_names_before_creating_anything():
    d = next_status(observed(job_id=None, attempt=0, present=frozenset()), SETTINGS)
    assert d.create == [] and d.again
    assert d.status["phase"] == "Pending" and d.status["reason"] == "Accepted"
    assert d.status["jobId"] == "demo-0123abcd" and d.status["attempt"] == 1
    assert d.status["children"] == {"driverPod": "demo-driver-1", "recipeConfigMap": "demo-recipe",
                                    "eventLogClaim": "demo-state"}
    assert d.status["eventLog"] == {"path": "/dj/state/events/demo-0123abcd/event_logs", "claimName": "demo-state"}


def test_accepted_job_creates_recipe_volume_and_driver():
    first = next_status(observed(job_id=None, attempt=0, present=frozenset()), SETTINGS)
    d = next_status(observed(present=frozenset(), **carried(first)), SETTINGS)
    assert kinds(d.create) == [("ConfigMap", "demo-recipe"), ("PersistentVolumeClaim", "demo-state"),
                               ("Service", "demo-dashboard"), ("Pod", "demo-driver-1")]
    assert d.status["phase"] == "Provisioning" and d.status["reason"] == "DriverStarting"
    assert d.status["startTime"] == "2026-01-02T03:04:05Z"
    assert [e.reason for e in d.events] == ["DriverStarting"]


def test_reconcile_is_idempotent_once_children_exist():
    first = next_status(observed("Pending", present=frozenset()), SETTINGS)
    second = next_status(observed(pods=(pod("Pending"),), **carried(first)), SETTINGS)
    again = next_status(observed(pods=(pod("Pending"),), **carried(second)), SETTINGS)
    assert second.create == again.create == [] and again.delete == [] and again.events == []
    assert status_patch(second.status, again.status) == {}


def test_ray_job_waits_for_a_ready_cluster_before_starting_the_driver():
    d = next_status(observed("Pending", raw_spec=RAY, new_token="fresh"), SETTINGS)
    assert kinds(d.create) == [("Secret", "demo-ray-auth"), ("RayCluster", "demo-ray")]
    assert d.create[0]["stringData"] == {"auth_token": "fresh"}  # the token observe drew for this reconcile
    assert d.status["phase"] == "Provisioning" and d.status["reason"] == "WaitingForRayCluster"
    assert cond(d, "ClusterReady")["status"] == "False"
    d = next_status(observed(raw_spec=RAY, cluster=ClusterState("demo-ray", "ready"), **carried(d)), SETTINGS)
    assert kinds(d.create)[-1] == ("Pod", "demo-driver-1")
    assert "provisioningSince" not in d.status
    assert cond(d, "ClusterReady")["status"] == "True"


def test_cluster_that_never_gets_ready_fails_the_job_and_is_deleted():
    later = NOW + timedelta(seconds=601)
    d = next_status(observed("Provisioning", raw_spec=RAY, cluster=ClusterState("demo-ray", None), now=later,
                             provisioning_since="2026-01-02T03:04:05Z"), SETTINGS)
    assert d.status["phase"] == "Failed" and d.status["reason"] == "RayClusterNotReady"
    assert kinds(d.delete) == [("RayCluster", "demo-ray"), ("Secret", "demo-ray-auth")]


PROGRESS = {"job_id": "j", "status": "running",
            "partitions": {"total": 4, "completed": 1, "failed": 0, "running": 2},
            "samples": {"processed": 100, "total": 400}, "progress_percent": 25.04,
            "current_ops": {"2": "text_length_filter", "1": "clean_links_mapper"},
            "last_checkpoint": {"path": "s3://b/c/x.parquet", "time": "2026-01-02T03:04:00Z"}, "eta_seconds": 12.6}


def test_running_driver_mirrors_progress_into_status():
    d = next_status(observed("Provisioning", pods=(pod("Running"),), endpoint=PROGRESS, **RUNNING), SETTINGS)
    st = d.status
    assert st["phase"] == "Running"
    assert st["partitions"] == {"total": 4, "completed": 1, "failed": 0, "running": 2}
    assert st["samples"] == {"processed": 100, "total": 400}
    assert st["progress"]["percent"] == 25.0 and st["progress"]["partitionsDone"] == "1/4"
    assert st["progress"]["currentOps"] == [{"partition": "1", "op": "clean_links_mapper"},
                                            {"partition": "2", "op": "text_length_filter"}]
    assert st["progress"]["etaSeconds"] == 13
    assert st["checkpoint"]["lastCheckpointPath"] == "s3://b/c/x.parquet"
    assert [e.reason for e in d.events] == ["DriverRunning"]
    assert cond(d, "DriverRunning")["status"] == "True" and cond(d, "Progressing")["status"] == "True"


def test_unchanged_progress_does_not_rewrite_the_status():
    first = next_status(observed("Running", pods=(pod("Running"),), endpoint=PROGRESS, **RUNNING), SETTINGS)
    later = NOW + timedelta(seconds=30)
    again = next_status(observed(pods=(pod("Running"),), endpoint=PROGRESS, now=later, **carried(first)), SETTINGS)
    assert status_patch(first.status, again.status) == {}
    moved = dict(PROGRESS, progress_percent=50)
    third = next_status(observed(pods=(pod("Running"),), endpoint=moved, now=later, **carried(first)), SETTINGS)
    assert status_patch(first.status, third.status)["progress"] == {"percent": 50.0, "updatedAt": "2026-01-02T03:04:35Z"}


@pytest.mark.parametrize("raw", [{"partitions": "many"}, {"progress_percent": "x"}, {"current_ops": 3}])
def test_malformed_progress_is_ignored(raw):
    assert progress_fields(raw) is None
    d = next_status(observed("Running", pods=(pod("Running"),), endpoint=raw, **RUNNING), SETTINGS)
    assert "progress" not in d.status


def test_unreachable_progress_is_tolerated_then_flags_progressing_false():
    first = next_status(observed("Running", reason="DriverRunning", pods=(pod("Running"),), polled=True, **RUNNING),
                        SETTINGS)
    assert first.status["progress"]["unreachableSince"] == "2026-01-02T03:04:05Z"
    assert cond(first, "Progressing")["status"] == "True" and first.events == []
    later = NOW + timedelta(seconds=SETTINGS.progress_grace_seconds + 1)
    d = next_status(observed(pods=(pod("Running"),), polled=True, now=later, **carried(first)), SETTINGS)
    assert cond(d, "Progressing")["reason"] == "ProgressUnreachable" and d.status["phase"] == "Running"
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "ProgressUnreachable")]
    back = next_status(observed(pods=(pod("Running"),), endpoint=PROGRESS, now=later, **carried(d)), SETTINGS)
    assert "unreachableSince" not in back.status["progress"] and cond(back, "Progressing")["status"] == "True"


def test_success_completes_progress_and_frees_the_cluster():
    d = next_status(observed("Running", raw_spec=RAY, pods=(pod("Succeeded", exit_code=0),),
                             cluster=ClusterState("demo-ray", "ready"), partitions={"total": 4, "completed": 3},
                             **RUNNING), SETTINGS)
    assert d.status["phase"] == "Succeeded" and d.status["exitCode"] == 0
    assert d.status["progress"]["percent"] == 100.0 and d.status["progress"]["partitionsDone"] == "4/4"
    assert kinds(d.delete) == [("RayCluster", "demo-ray"), ("Secret", "demo-ray-auth")]
    assert d.events[0].type == "Normal" and d.events[0].reason == "Completed"
    assert cond(d, "Complete")["status"] == "True" and cond(d, "Progressing")["status"] == "False"


def test_keep_ray_cluster_leaves_it_after_finish():
    raw = spec(executorType="ray", cleanup={"keepRayCluster": True})
    d = next_status(observed("Running", raw_spec=raw, pods=(pod("Succeeded", exit_code=0),),
                             cluster=ClusterState("demo-ray", "ready"), **RUNNING), SETTINGS)
    assert d.status["phase"] == "Succeeded" and d.delete == []


@pytest.mark.parametrize("code, reason", [(2, "InvalidRecipe"), (3, "BadInput"), (6, "PartitionsFailed")])
def test_permanent_exit_codes_fail_without_retry(code, reason):
    d = next_status(observed("Running", pods=(pod("Failed", exit_code=code),), **RUNNING), SETTINGS)
    assert d.status["phase"] == "Failed" and d.status["reason"] == reason
    assert f"exited with code {code}" in d.status["message"]
    assert d.status["attempt"] == 1 and d.create == [] and d.delete == []
    assert d.events[0].type == "Warning" and cond(d, "Failed")["status"] == "True"


@pytest.mark.parametrize("code", [1, 4, 5, 7, 130, 137])
def test_retryable_exit_deletes_the_pod_then_starts_the_next_attempt_with_the_same_job_id(code):
    failed = pod("Failed", exit_code=code)
    d = next_status(observed("Running", pods=(failed,), **RUNNING), SETTINGS)
    assert d.status["phase"] == "Retrying" and d.status["attempt"] == 2 and d.status["failures"] == 1
    assert kinds(d.delete) == [("Pod", "demo-driver-1")] and d.create == []
    assert d.status["children"]["driverPod"] == "demo-driver-2"
    assert d.events[0].type == "Warning" and d.events[0].reason == "DriverFailed"
    # the old pod is still terminating: no second driver
    d2 = next_status(observed(pods=(pod("Failed", exit_code=code, deleting=True),), **carried(d)), SETTINGS)
    assert d2.create == [] and d2.status["phase"] == "Retrying"
    d3 = next_status(observed(**carried(d2)), SETTINGS)
    assert kinds(d3.create)[-1] == ("Pod", "demo-driver-2")
    args = d3.create[-1]["spec"]["containers"][0]["args"]
    assert args[args.index("--job_id") + 1] == "demo-0123abcd"


def test_retry_waits_for_backoff():
    raw = spec(backoff={"initialSeconds": 30})
    d = next_status(observed("Running", raw_spec=raw, pods=(pod("Failed", exit_code=5),), **RUNNING), SETTINGS)
    assert d.status["nextAttemptAfter"] == "2026-01-02T03:04:35Z"
    early = next_status(observed(raw_spec=raw, now=NOW + timedelta(seconds=10), **carried(d)), SETTINGS)
    assert early.create == [] and early.status["phase"] == "Retrying"
    later = next_status(observed(raw_spec=raw, now=NOW + timedelta(seconds=31), **carried(d)), SETTINGS)
    assert kinds(later.create)[-1] == ("Pod", "demo-driver-2")


def test_backoff_is_exponential_and_capped():
    s = parse_spec(spec(backoff={"initialSeconds": 10, "maxSeconds": 35}))
    assert [backoff_delay(n, s) for n in (1, 2, 3, 4)] == [10, 20, 35, 35]


def test_backoff_limit_fails_the_job_with_the_exit_reason():
    d = next_status(observed("Running", raw_spec=spec(backoffLimit=1), pods=(pod("Failed", 2, exit_code=5),),
                             attempt=2, failures=1), SETTINGS)
    assert d.status["phase"] == "Failed" and d.status["reason"] == "BackoffLimitExceeded"
    assert "exited with code 5" in d.status["message"] and "storage was unavailable" in d.status["message"]


def test_vanished_running_driver_counts_as_a_failed_attempt():
    d = next_status(observed("Running", **RUNNING), SETTINGS)
    assert d.status["attempt"] == 2 and d.status["failures"] == 1 and d.status["phase"] == "Retrying"
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "DriverLost")]


def test_missing_pod_while_provisioning_is_just_created_again():
    d = next_status(observed("Provisioning", **RUNNING), SETTINGS)
    assert kinds(d.create)[-1] == ("Pod", "demo-driver-1") and d.status["attempt"] == 1


@pytest.mark.parametrize("field, seconds, reason", [("activeDeadlineSeconds", 60, "DeadlineExceeded"),
                                                   ("progressDeadlineSeconds", 60, "ProgressDeadlineExceeded")])
def test_deadlines_stop_the_driver_then_release_the_cluster_then_fail(field, seconds, reason):
    """The driver needs its RayCluster while it flushes its in-flight partition: the cluster
    goes only once the driver is gone, and the driver's exit code is recorded."""
    raw = {**RAY, field: seconds}
    ready = ClusterState("demo-ray", "ready")
    d = next_status(observed("Running", raw_spec=raw, pods=(pod("Running"),), cluster=ready,
                             start_time="2026-01-02T03:04:05Z", last_transition_time="2026-01-02T03:04:05Z",
                             now=NOW + timedelta(seconds=61), **RUNNING), SETTINGS)
    assert d.status["phase"] == "Stopping" and d.status["reason"] == reason
    assert kinds(d.delete) == [("Pod", "demo-driver-1")]  # not the cluster, yet
    assert [e.reason for e in d.events] == [reason] and d.events[0].type == "Warning"
    later = NOW + timedelta(seconds=70)
    d = next_status(observed(raw_spec=raw, pods=(pod("Running", deleting=True, deadline=later),), cluster=ready,
                             now=later, **carried(d)), SETTINGS)
    assert d.status["phase"] == "Stopping" and d.delete == []
    d = next_status(observed(raw_spec=raw, pods=(pod("Failed", exit_code=130, deleting=True),), cluster=ready,
                             now=later, **carried(d)), SETTINGS)
    d = next_status(observed(raw_spec=raw, cluster=ready, now=later, **carried(d)), SETTINGS)
    assert d.status["phase"] == "Failed" and d.status["reason"] == reason and d.status["exitCode"] == 130
    assert ("RayCluster", "demo-ray") in kinds(d.delete) and "pendingFailure" not in d.status
    assert [(e.type, e.reason) for e in d.events] == [("Warning", reason)]  # now Failed


def test_progress_deadline_clock_starts_at_each_attempts_driver_start():
    """Resumed after 2 h stopped: the old progress is hours old, the new driver just started."""
    raw = spec(progressDeadlineSeconds=300)
    old_progress = {"percent": 40.0, "partitionsDone": "2/5", "currentOps": [], "updatedAt": "2026-01-02T01:00:00Z"}
    d = next_status(observed("Stopped", raw_spec=raw, progress=old_progress, attempt=1,
                             last_transition_time="2026-01-02T01:00:00Z"), SETTINGS)
    assert d.status["phase"] == "Provisioning" and d.status["attempt"] == 2
    d = next_status(observed(raw_spec=raw, pods=(pod("Running", attempt=2),), **carried(d)), SETTINGS)
    assert d.status["phase"] == "Running"
    later = NOW + timedelta(seconds=30)
    d = next_status(observed(raw_spec=raw, pods=(pod("Running", attempt=2),), now=later, **carried(d)), SETTINGS)
    assert d.status["phase"] == "Running", d.status.get("message")
    much_later = NOW + timedelta(seconds=301)
    d = next_status(observed(raw_spec=raw, pods=(pod("Running", attempt=2),), now=much_later, **carried(d)), SETTINGS)
    assert d.status["reason"] == "ProgressDeadlineExceeded"


def test_progress_resets_the_progress_deadline():
    d = next_status(observed("Running", raw_spec=spec(progressDeadlineSeconds=60), pods=(pod("Running"),),
                             last_transition_time="2026-01-02T03:00:00Z",
                             progress={"updatedAt": "2026-01-02T03:04:00Z"}, **RUNNING), SETTINGS)
    assert d.status["phase"] == "Running"


def test_stop_while_running_deletes_driver_before_cluster():
    d = next_status(observed("Running", raw_spec=RAY, stop=True, pods=(pod("Running"),),
                             cluster=ClusterState("demo-ray", "ready"), **RUNNING), SETTINGS)
    assert kinds(d.delete) == [("Pod", "demo-driver-1")]
    assert d.status["phase"] == "Stopping"


def test_stop_waits_for_a_terminating_driver_then_deletes_cluster_then_is_stopped():
    base = dict(raw_spec=RAY, stop=True, reason="StopRequested", **RUNNING)
    d = next_status(observed("Stopping", pods=(pod("Running", deleting=True),),
                             cluster=ClusterState("demo-ray", "ready"), **base), SETTINGS)
    assert d.delete == [] and d.status["phase"] == "Stopping" and d.events == []
    d = next_status(observed("Stopping", cluster=ClusterState("demo-ray", "ready"), **base), SETTINGS)
    assert kinds(d.delete) == [("RayCluster", "demo-ray"), ("Secret", "demo-ray-auth")] and d.status["phase"] == "Stopping"
    d = next_status(observed("Stopping", cluster=ClusterState("demo-ray", "ready", deleting=True), **base), SETTINGS)
    assert d.delete == [] and d.status["phase"] == "Stopping"
    d = next_status(observed("Stopping", **base), SETTINGS)
    assert d.status["phase"] == "Stopped" and [e.reason for e in d.events] == ["Stopped"]
    assert cond(d, "Stopped")["status"] == "True"


def test_a_driver_stuck_past_its_grace_period_is_force_deleted():
    stuck = pod("Running", deleting=True, deadline=NOW - timedelta(seconds=SETTINGS.force_delete_after_seconds + 1))
    d = next_status(observed("Stopping", stop=True, pods=(stuck,), **RUNNING), SETTINGS)
    assert d.delete == [{"apiVersion": "v1", "kind": "Pod", "namespace": "ns", "name": "demo-driver-1",
                         "gracePeriodSeconds": 0}]


def test_a_started_stop_completes_even_if_the_flag_flips_back():
    d = next_status(observed("Stopping", pods=(pod("Running", deleting=True),), **RUNNING), SETTINGS)
    assert d.status["phase"] == "Stopping" and d.create == []
    d = next_status(observed("Stopping", **RUNNING), SETTINGS)
    assert d.status["phase"] == "Stopped"
    d = next_status(observed(**carried(d)), SETTINGS)
    assert d.status["attempt"] == 2 and kinds(d.create)[-1] == ("Pod", "demo-driver-2")


def test_unstopping_resumes_as_a_new_attempt_of_the_same_job():
    d = next_status(observed("Stopped", exit_code=130, start_time="2026-01-01T00:00:00Z", **RUNNING), SETTINGS)
    assert d.status["phase"] == "Provisioning" and d.status["attempt"] == 2
    assert "exitCode" not in d.status and d.status["startTime"] == "2026-01-02T03:04:05Z"
    assert kinds(d.create)[-1] == ("Pod", "demo-driver-2")
    assert [e.reason for e in d.events] == ["Resuming", "DriverStarting"]


def test_resume_waits_until_leftover_driver_pods_are_gone():
    d = next_status(observed("Stopped", pods=(pod("Failed", exit_code=2),), **RUNNING), SETTINGS)
    assert kinds(d.delete) == [("Pod", "demo-driver-1")] and not any(c["kind"] == "Pod" for c in d.create)
    assert d.status["reason"] == "WaitingForOldDriver"


def test_stop_after_success_changes_nothing():
    d = next_status(observed("Succeeded", stop=True, pods=(pod("Succeeded", exit_code=0),), **RUNNING), SETTINGS)
    assert d.status["phase"] == "Succeeded" and d.delete == [] and d.events == []


def test_a_failed_job_can_be_retried_by_stop_then_unstop():
    d = next_status(observed("Failed", stop=True, failures=3, reason="BackoffLimitExceeded", **RUNNING), SETTINGS)
    assert d.status["phase"] == "Stopped"
    d = next_status(observed(**carried(d)), SETTINGS)
    assert d.status["attempt"] == 2 and d.status["failures"] == 0


def test_invalid_spec_fails_and_stops_what_runs():
    o = Observed(name="demo", namespace="ns", uid=UID, now=NOW, spec=None, spec_error="spec.x: bad",
                 pods=(pod("Running"),), cluster=ClusterState("demo-ray", "ready"))
    d = next_status(o, SETTINGS)  # never valid, so nothing to fall back on; the driver goes first
    assert d.status["phase"] == "Stopping" and d.status["reason"] == "InvalidSpec"
    assert kinds(d.delete) == [("Pod", "demo-driver-1")]
    o = Observed(name="demo", namespace="ns", uid=UID, now=NOW, spec=None, spec_error="spec.x: bad",
                 status=parse_status(d.status), cluster=ClusterState("demo-ray", "ready"))
    d = next_status(o, SETTINGS)
    assert d.status["phase"] == "Failed" and d.status["reason"] == "InvalidSpec" and d.status["message"] == "spec.x: bad"
    assert kinds(d.delete) == [("RayCluster", "demo-ray"), ("Secret", "demo-ray-auth")]


def test_fixed_spec_restarts_a_job_that_failed_on_its_spec():
    d = next_status(observed("Failed", reason="InvalidSpec", **RUNNING), SETTINGS)
    assert d.status["phase"] == "Provisioning" and kinds(d.create)[-1] == ("Pod", "demo-driver-2")


def test_ttl_deletes_a_finished_job():
    raw = spec(cleanup={"ttlSecondsAfterFinished": 60})
    base = dict(raw_spec=raw, completion_time="2026-01-02T03:04:05Z", **RUNNING)
    assert next_status(observed("Succeeded", **base), SETTINGS).delete == []
    d = next_status(observed("Succeeded", now=NOW + timedelta(seconds=60), **base), SETTINGS)
    assert kinds(d.delete) == [("DataJuicerJob", "demo")]
    assert [e.reason for e in d.events] == ["TTLExpired"]


def test_conditions_keep_their_transition_time_while_unchanged():
    first = next_status(observed("Running", pods=(pod("Running"),), endpoint=PROGRESS, **RUNNING), SETTINGS)
    later = NOW + timedelta(seconds=90)
    again = next_status(observed(pods=(pod("Running"),), endpoint=PROGRESS, now=later, **carried(first)), SETTINGS)
    assert again.status["conditions"] == first.status["conditions"]


def test_teardown_deletes_drivers_first_and_waits_for_them():
    o = observed("Running", raw_spec=RAY, pods=(pod("Running"), pod("Failed", 0, exit_code=1)),
                 cluster=ClusterState("demo-ray", "ready"))
    d = teardown(o, SETTINGS)
    assert kinds(d.delete) == [("Pod", "demo-driver-1"), ("Pod", "demo-driver-0"),
                               ("ConfigMap", "demo-recipe"), ("PersistentVolumeClaim", "demo-state"),
                               ("Service", "demo-dashboard")]
    assert d.waiting
    d = teardown(observed("Running", raw_spec=RAY, cluster=ClusterState("demo-ray", "ready")), SETTINGS)
    assert ("RayCluster", "demo-ray") in kinds(d.delete) and d.waiting
    assert kinds(d.delete).count(("Secret", "demo-ray-auth")) == 1
    assert not teardown(observed("Running", present=frozenset()), SETTINGS).waiting
    # a Secret whose cluster never came, or is gone already, still goes
    assert ("Secret", "demo-ray-auth") in kinds(teardown(observed("Failed", raw_spec=RAY), SETTINGS).delete)
    assert "Secret" not in dict(kinds(teardown(observed("Failed"), SETTINGS).delete))


def test_teardown_retains_the_state_pvc_on_request():
    d = teardown(observed("Succeeded", raw_spec=spec(eventLog={"retain": True})), SETTINGS)
    assert kinds(d.delete) == [("ConfigMap", "demo-recipe"), ("Service", "demo-dashboard")]


def test_status_patch_nulls_removed_keys_and_replaces_lists():
    old = {"phase": "Running", "nextAttemptAfter": "t", "progress": {"currentOps": [{"partition": "1"}], "percent": 5}}
    new = {"phase": "Running", "progress": {"currentOps": [], "percent": 5}}
    assert status_patch(old, new) == {"nextAttemptAfter": None, "progress": {"currentOps": []}}


def test_a_job_created_stopped_records_its_names_and_starts_nothing():
    first = next_status(observed(job_id=None, attempt=0, stop=True, present=frozenset()), SETTINGS)
    d = next_status(observed(stop=True, present=frozenset(), **carried(first)), SETTINGS)
    assert d.create == [] and d.status["phase"] == "Stopped"


@pytest.mark.parametrize("spec_, status, expected", [
    ({}, {}, True),
    ({}, {"phase": "Running"}, True),
    ({}, {"phase": "Succeeded"}, False),
    ({"cleanup": {"ttlSecondsAfterFinished": 60}}, {"phase": "Failed"}, True),
    ({"stop": True}, {"phase": "Stopped"}, False),
    ({"stop": False}, {"phase": "Stopped"}, True),  # stop withdrawn while Stopping: resume without a spec event
])
def test_the_timer_visits_only_jobs_with_something_to_do(spec_, status, expected):
    assert needs_timer(spec_, status) is expected


def test_driver_terminating_on_a_lost_node_is_force_deleted_and_the_next_attempt_starts():
    """A pod with a deletionTimestamp that still says Running: its kubelet is gone."""
    deadline = NOW - timedelta(seconds=31)  # grace period over, plus the 30 s margin
    d = next_status(observed("Running", pods=(pod("Running", deleting=True, deadline=deadline),), **RUNNING), SETTINGS)
    assert d.delete == [{"apiVersion": "v1", "kind": "Pod", "namespace": "ns", "name": "demo-driver-1",
                         "gracePeriodSeconds": 0}]
    assert d.status["reason"] == "DriverTerminating" and d.status["phase"] == "Running"
    d = next_status(observed(**carried(d)), SETTINGS)  # the force delete removed it
    assert d.status["phase"] == "Retrying" and d.status["reason"] == "DriverLost" and d.status["attempt"] == 2
    d = next_status(observed(**carried(d)), SETTINGS)
    assert kinds(d.create)[-1] == ("Pod", "demo-driver-2")


def test_driver_terminating_within_its_grace_period_is_left_to_finish():
    d = next_status(observed("Running", pods=(pod("Running", deleting=True, deadline=NOW),), **RUNNING), SETTINGS)
    assert d.delete == [] and d.status["reason"] == "DriverTerminating"


def test_a_same_named_cluster_not_ours_fails_at_once_and_is_never_deleted():
    theirs = ClusterState("demo-ray", "ready", foreign=True)
    d = next_status(observed("Pending", raw_spec=RAY, cluster=theirs), SETTINGS)
    assert d.status["phase"] == "Failed" and d.status["reason"] == "RayClusterNameConflict"
    assert "demo-ray" in d.status["message"] and d.create == [] and d.delete == []


def test_a_cluster_deleted_under_a_running_driver_stops_it_and_counts_a_failed_attempt():
    d = next_status(observed("Running", raw_spec=RAY, pods=(pod("Running"),), cluster=None, **RUNNING), SETTINGS)
    assert d.status["phase"] == "Retrying" and d.status["reason"] == "RayClusterLost"
    assert d.status["failures"] == 1 and d.status["attempt"] == 2
    assert kinds(d.delete) == [("Pod", "demo-driver-1")] and d.create == []
    # next: the old driver is still going; a new cluster is made for attempt 2, no second driver yet
    d = next_status(observed(raw_spec=RAY, pods=(pod("Running", deleting=True, deadline=NOW),), **carried(d)),
                    SETTINGS)
    assert kinds(d.create) == [("Secret", "demo-ray-auth"), ("RayCluster", "demo-ray")]
    assert d.status["phase"] == "Retrying"


def test_cluster_lost_with_no_retries_left_fails_after_the_driver_is_gone():
    d = next_status(observed("Running", raw_spec={**RAY, "backoffLimit": 0}, pods=(pod("Running"),), **RUNNING),
                    SETTINGS)
    assert d.status["phase"] == "Stopping" and d.status["reason"] == "RayClusterLost"
    assert kinds(d.delete) == [("Pod", "demo-driver-1")]


def test_ray_cluster_timeout_does_not_orphan_a_driver():
    later = NOW + timedelta(seconds=601)
    d = next_status(observed("Retrying", raw_spec=RAY, pods=(pod("Running"),), cluster=ClusterState("demo-ray"),
                             now=later, provisioning_since="2026-01-02T03:04:05Z", attempt=2,
                             children={"driverPod": "demo-driver-2"}), SETTINGS)
    assert d.status["phase"] == "Stopping" and d.status["reason"] == "RayClusterNotReady"
    assert kinds(d.delete) == [("Pod", "demo-driver-1")]


def valid_first(raw, phase="Running", **status):
    """Status as it is after a reconcile that saw `raw` valid."""
    d = next_status(observed(phase, raw_spec=raw, pods=(pod("Running"),), **{**RUNNING, **status}), SETTINGS)
    return carried(d)


def test_an_invalid_edit_keeps_a_running_job_on_its_last_valid_spec():
    st = valid_first(spec())
    bad = {**spec(), "ray": {"workerGroups": [{"name": "w", "replicas": 5, "maxReplicas": 2}]}}
    o = observed(raw_spec=spec(), pods=(pod("Running"),), **st)
    o = Observed(**{**o.__dict__, "spec": None, "spec_error": "spec.ray...: need minReplicas <= replicas"})
    d = next_status(o, SETTINGS)
    assert d.status["phase"] == "Running" and d.delete == []
    assert cond(d, "SpecValid")["status"] == "False" and "last valid spec" in cond(d, "SpecValid")["message"]
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "InvalidSpec")]
    assert d.status["lastValidSpec"] == st["last_valid_spec"]
    again = next_status(Observed(**{**o.__dict__, "status": parse_status(d.status)}), SETTINGS)
    assert again.events == []  # warned once


def test_an_invalid_edit_never_touches_a_finished_job():
    for phase in ("Succeeded", "Failed"):
        st = valid_first(spec(), phase=phase, reason="Completed")
        o = observed(phase, raw_spec=spec(), **{k: v for k, v in st.items() if k != "phase"})
        o = Observed(**{**o.__dict__, "spec": None, "spec_error": "spec.x: bad"})
        d = next_status(o, SETTINGS)
        assert d.status["phase"] == phase and d.create == [] and d.delete == []
        assert cond(d, "SpecValid")["status"] == "False"


def test_a_spec_invalid_from_the_start_fails_with_invalid_spec():
    o = observed("Pending")
    o = Observed(**{**o.__dict__, "spec": None, "spec_error": "spec.x: bad"})
    d = next_status(o, SETTINGS)
    assert d.status["phase"] == "Failed" and d.status["reason"] == "InvalidSpec"


def test_unknown_spec_fields_are_a_warning_not_a_failure():
    from djoperator.crd import parse_spec_lenient
    parsed, unknown = parse_spec_lenient({**spec(), "futureField": 1, "driver": {"newKnob": True}})
    assert unknown == ["spec.driver.newKnob", "spec.futureField"] or sorted(unknown) == [
        "spec.driver.newKnob", "spec.futureField"]
    o = observed("Running", pods=(pod("Running"),), **RUNNING)
    o = Observed(**{**o.__dict__, "spec": parsed, "spec_warnings": tuple(unknown)})
    d = next_status(o, SETTINGS)
    assert d.status["phase"] == "Running"
    assert cond(d, "SpecValid")["status"] == "True" and cond(d, "SpecValid")["reason"] == "UnknownFieldsIgnored"
    assert ("Warning", "UnknownFieldsIgnored") in [(e.type, e.reason) for e in d.events]


@pytest.mark.parametrize("key, use", [("job_id", "spec.jobId"), ("event_log_dir", "spec.eventLog"),
                                      ("checkpoint_dir", "spec.checkpointDir")])
def test_overrides_of_what_the_operator_owns_are_refused_naming_the_field_to_use(key, use):
    from djoperator.crd import SpecError, parse_spec
    with pytest.raises(SpecError) as err:
        parse_spec(spec(overrides={key: "x"}))
    assert key in str(err.value) and use in str(err.value)


@pytest.mark.parametrize("change", [{"jobId": "other"}, {"executorType": "ray"}, {"eventLog": {"emptyDir": True}}])
def test_per_job_immutable_fields_cannot_change_between_attempts(change):
    st = valid_first(spec(), phase="Stopped", reason="Stopped")
    edited = {**spec(), **change}
    d = next_status(observed("Stopped", raw_spec=edited, **{k: v for k, v in st.items() if k != "phase"}), SETTINGS)
    field = "spec." + next(iter(change))
    assert cond(d, "SpecValid")["status"] == "False" and field in cond(d, "SpecValid")["message"]
    assert d.status["lastValidSpec"] == st["last_valid_spec"]
    assert d.status["phase"] == "Provisioning"  # resumed, on the spec it was accepted with
    assert all(c["kind"] != "RayCluster" for c in d.create)


def test_a_refused_driver_create_is_reported_once_then_fails_at_the_start_deadline():
    from djoperator.observed import CreateFailure
    from djoperator.status import create_failed
    o = observed("Pending", raw_spec=spec(startDeadlineSeconds=60))
    d = next_status(o, SETTINGS)
    assert kinds(d.create)[-1] == ("Pod", "demo-driver-1")
    refused = [CreateFailure("Pod", "demo-driver-1", 403, 'pods "demo-driver-1" is forbidden: exceeded quota: q')]
    after, events = create_failed(o.status, d.status, refused)
    assert after["phase"] == "Provisioning" and after["reason"] == "CreateForbidden"
    assert "exceeded quota" in after["message"] and [(e.type, e.reason) for e in events] == [
        ("Warning", "CreateForbidden")]
    # the next reconcile asks again, and says nothing new
    o2 = observed(raw_spec=spec(startDeadlineSeconds=60), now=NOW + timedelta(seconds=10), **carried_raw(after))
    d2 = next_status(o2, SETTINGS)
    assert kinds(d2.create)[-1] == ("Pod", "demo-driver-1") and d2.events == []
    after2, events2 = create_failed(o2.status, d2.status, refused)
    assert events2 == [] and after2["reason"] == "CreateForbidden"
    late = observed(raw_spec=spec(startDeadlineSeconds=60), now=NOW + timedelta(seconds=61), **carried_raw(after2))
    d3 = next_status(late, SETTINGS)
    assert d3.status["phase"] == "Failed" and d3.status["reason"] == "CreateForbidden"
    assert "spec.startDeadlineSeconds" in d3.status["message"] and "exceeded quota" in d3.status["message"]


def test_a_driver_stuck_pending_fails_at_the_start_deadline():
    from djoperator.observed import PodState
    stuck = PodState("demo-driver-1", 1, "Pending", blocked="ContainerCreating: MountVolume.SetUp failed")
    d = next_status(observed("Provisioning", pods=(stuck,), starting_since="2026-01-02T02:00:00Z",
                             reason="DriverCannotStart", message="x", **RUNNING), SETTINGS)
    assert d.status["phase"] == "Stopping" and d.status["reason"] == "DriverCannotStart"
    assert kinds(d.delete) == [("Pod", "demo-driver-1")]


def test_an_unschedulable_driver_says_so_and_fails_with_that_reason_at_the_start_deadline():
    from djoperator.observed import PodState
    pending = PodState("demo-driver-1", 1, "Pending", blocked="Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.")
    d = next_status(observed("Provisioning", pods=(pending,), starting_since=NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
                             reason="DriverStarting", **RUNNING), SETTINGS)
    assert d.status["phase"] == "Provisioning" and d.status["reason"] == "DriverUnschedulable"
    assert "Insufficient cpu" in d.status["message"] and "spec.driver.resources" in d.status["message"]
    assert ("Warning", "DriverUnschedulable") in [(e.type, e.reason) for e in d.events]
    late = next_status(observed("Provisioning", pods=(pending,), starting_since="2026-01-02T02:00:00Z",
                                reason="DriverUnschedulable", message=d.status["message"], **RUNNING), SETTINGS)
    assert late.status["phase"] == "Stopping" and late.status["reason"] == "DriverUnschedulable"
    assert "spec.startDeadlineSeconds" in late.status["message"] and "Insufficient cpu" in late.status["message"]
    assert kinds(late.delete) == [("Pod", "demo-driver-1")]


def carried_raw(status_dict):
    st = parse_status(status_dict)
    return {k: v for k, v in st.model_dump().items() if v is not None}


def test_a_missing_ray_auth_secret_replaces_the_cluster_with_a_new_token():
    present = frozenset({("ConfigMap", "demo-recipe"), ("PersistentVolumeClaim", "demo-state")})
    d = next_status(observed("Provisioning", raw_spec=RAY, cluster=ClusterState("demo-ray", "ready"), present=present,
                             **RUNNING), SETTINGS)
    assert ("RayCluster", "demo-ray") in kinds(d.delete) and d.create == []
    assert ("Warning", "RayAuthSecretMissing") in [(e.type, e.reason) for e in d.events]
    d = next_status(observed(raw_spec=RAY, cluster=None, present=present, new_token="new", **carried(d)), SETTINGS)
    assert kinds(d.create)[-2:] == [("Secret", "demo-ray-auth"), ("RayCluster", "demo-ray")]


def test_a_ray_or_storage_change_replaces_the_cluster_before_the_next_attempt():
    from djoperator import children
    from djoperator.crd import Job
    old_hash = children.ray_cluster(Job("demo", "ns", UID, parse_spec(RAY)), SETTINGS)["metadata"]["annotations"][
        children.ANNOTATION_CLUSTER_HASH]
    changed = {**RAY, "ray": {"workerGroups": [{"name": "workers", "replicas": 3}]}}
    made_before = ClusterState("demo-ray", "ready", spec_hash=old_hash)
    # mid-attempt: the running driver keeps its cluster
    d = next_status(observed("Running", raw_spec=changed, pods=(pod("Running"),), cluster=made_before, **RUNNING),
                    SETTINGS)
    assert d.delete == [] and d.status["phase"] == "Running"
    # between attempts: replaced, then made again from the new spec
    d = next_status(observed("Stopped", raw_spec=changed, cluster=made_before, **RUNNING), SETTINGS)
    assert ("RayCluster", "demo-ray") in kinds(d.delete) and d.status["reason"] == "ReplacingRayCluster"
    assert not any(c["kind"] == "Pod" for c in d.create)
    d = next_status(observed(raw_spec=changed, cluster=None, **carried(d)), SETTINGS)
    made = next(c for c in d.create if c["kind"] == "RayCluster")
    assert made["spec"]["workerGroupSpecs"][0]["replicas"] == 3
    # the same spec: no replacement
    same = ClusterState("demo-ray", "ready", spec_hash=old_hash)
    d = next_status(observed("Provisioning", raw_spec=RAY, cluster=same, **RUNNING), SETTINGS)
    assert d.delete == [] and kinds(d.create)[-1] == ("Pod", "demo-driver-1")
