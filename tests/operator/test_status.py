from datetime import timedelta

import pytest

from djoperator.settings import Settings
from djoperator.status import (ClusterState, Observed, completed_progress, merged_progress, next_status,
                               progress_from_endpoint, retry_delay, status_patch, teardown)

from .factories import NOW, SETTINGS, UID, observed, pod, spec

RAY = spec(executorType="ray_partitioned")


def kinds(items):
    return [(c["kind"], c["metadata"]["name"] if "metadata" in c else c["name"]) for c in items]


def test_new_job_creates_recipe_volume_and_driver_then_is_pending():
    d = next_status(observed(present=frozenset()), SETTINGS)
    assert kinds(d.create) == [("ConfigMap", "demo-recipe"), ("PersistentVolumeClaim", "demo-state"),
                               ("Pod", "demo-driver-1")]
    assert d.status["phase"] == "Pending" and d.status["reason"] == "DriverStarting"
    assert d.status["attempt"] == 1 and d.status["jobId"] == "demo-0123abcd"
    assert d.status["driverPod"] == "demo-driver-1"
    assert [e.reason for e in d.events] == ["DriverStarting"]


def test_reconcile_is_idempotent_once_children_exist():
    first = next_status(observed(present=frozenset()), SETTINGS)
    again = next_status(observed(pods=(pod("Pending"),), **_status(first)), SETTINGS)
    assert again.create == [] and again.delete == [] and again.events == []
    assert status_patch(first.status, again.status) == {}


def _status(decision):
    from djoperator.crd import parse_status
    st = parse_status(decision.status)
    return {k: v for k, v in st.model_dump().items() if v is not None and k != "phase"} | {"phase": st.phase}


def test_ray_job_waits_for_a_ready_cluster_before_starting_the_driver():
    d = next_status(observed(raw_spec=RAY), SETTINGS)
    assert kinds(d.create) == [("RayCluster", "demo-ray")]
    assert d.status["reason"] == "WaitingForRayCluster" and d.status["waitingSince"] == "2026-01-02T03:04:05Z"
    d = next_status(observed(raw_spec=RAY, cluster=ClusterState("demo-ray", "ready"), **_status(d)), SETTINGS)
    assert kinds(d.create)[-1] == ("Pod", "demo-driver-1")
    assert "waitingSince" not in d.status


def test_cluster_that_never_gets_ready_fails_the_job_and_is_deleted():
    later = NOW + timedelta(seconds=601)
    d = next_status(observed("Pending", raw_spec=RAY, cluster=ClusterState("demo-ray", None), now=later,
                             waiting_since="2026-01-02T03:04:05Z", ray_cluster="demo-ray"), SETTINGS)
    assert d.status["phase"] == "Failed" and d.status["reason"] == "RayClusterNotReady"
    assert kinds(d.delete) == [("RayCluster", "demo-ray")]


def test_running_driver_mirrors_progress_into_status():
    raw = {"job_id": "j", "status": "running", "partitions": {"total": 4, "completed": 1, "failed": 0, "running": 2},
           "samples": {"processed": 100, "total": 400}, "progress_percent": 25.04,
           "current_ops": {"2": "text_length_filter", "1": "clean_links_mapper"},
           "last_checkpoint": {"path": "s3://b/c/x.parquet", "time": "2026-01-02T03:04:00Z"}, "eta_seconds": 12.6}
    d = next_status(observed("Pending", pods=(pod("Running"),), attempt=1, driver_pod="demo-driver-1",
                             progress=raw), SETTINGS)
    assert d.status["phase"] == "Running"
    p = d.status["progress"]
    assert p["percent"] == 25.0 and p["partitions"] == {"total": 4, "completed": 1, "failed": 0, "running": 2}
    assert p["currentOps"] == [{"partition": "1", "op": "clean_links_mapper"},
                               {"partition": "2", "op": "text_length_filter"}]
    assert p["lastCheckpoint"]["path"] == "s3://b/c/x.parquet" and p["etaSeconds"] == 13
    assert [e.reason for e in d.events] == ["DriverRunning"]


def test_unchanged_progress_does_not_rewrite_the_status():
    raw = {"status": "running", "progress_percent": 10}
    first = merged_progress(None, raw, NOW)
    assert merged_progress(first, raw, NOW + timedelta(seconds=5)) is first
    assert merged_progress(first, {"progress_percent": 20}, NOW)["percent"] == 20.0


@pytest.mark.parametrize("raw", [{"partitions": "many"}, {"progress_percent": "x"}, {"current_ops": 3}])
def test_malformed_progress_is_ignored(raw):
    assert progress_from_endpoint(raw) is None
    assert merged_progress({"percent": 5.0}, raw, NOW) == {"percent": 5.0}


def test_success_completes_progress_and_frees_the_cluster():
    d = next_status(observed("Running", raw_spec=RAY, pods=(pod("Succeeded", exit_code=0),), attempt=1,
                             driver_pod="demo-driver-1", cluster=ClusterState("demo-ray", "ready"),
                             progress=None), SETTINGS)
    assert d.status["phase"] == "Succeeded" and d.status["exitCode"] == 0
    assert d.status["progress"]["percent"] == 100.0
    assert kinds(d.delete) == [("RayCluster", "demo-ray")]
    assert d.events[0].type == "Normal" and d.events[0].reason == "Completed"


def test_keep_after_finish_leaves_the_cluster():
    raw = spec(executorType="ray", ray={"keepAfterFinish": True})
    d = next_status(observed("Running", raw_spec=raw, pods=(pod("Succeeded", exit_code=0),), attempt=1,
                             driver_pod="demo-driver-1", cluster=ClusterState("demo-ray", "ready")), SETTINGS)
    assert d.status["phase"] == "Succeeded" and d.delete == []


@pytest.mark.parametrize("code, reason", [(2, "InvalidRecipe"), (3, "BadInput"), (6, "PartitionsFailed")])
def test_permanent_exit_codes_fail_without_retry(code, reason):
    d = next_status(observed("Running", pods=(pod("Failed", exit_code=code),), attempt=1,
                             driver_pod="demo-driver-1"), SETTINGS)
    assert d.status["phase"] == "Failed" and d.status["reason"] == reason
    assert d.status["attempt"] == 1 and d.create == []
    assert d.events[0].type == "Warning"


@pytest.mark.parametrize("code", [1, 4, 5, 130, 137])
def test_retryable_exit_starts_the_next_attempt_with_the_same_job_id(code):
    d = next_status(observed("Running", pods=(pod("Failed", exit_code=code),), attempt=1,
                             driver_pod="demo-driver-1"), SETTINGS)
    assert d.status["phase"] == "Pending" and d.status["attempt"] == 2 and d.status["failures"] == 1
    assert kinds(d.create)[-1] == ("Pod", "demo-driver-2")
    new_args = d.create[-1]["spec"]["containers"][0]["args"]
    assert new_args[new_args.index("--job_id") + 1] == "demo-0123abcd"


def test_retry_waits_for_backoff():
    settings = Settings(retry_base_seconds=30)
    d = next_status(observed("Running", pods=(pod("Failed", exit_code=5),), attempt=1,
                             driver_pod="demo-driver-1"), settings)
    assert d.status["reason"] == "Retrying" and d.status["nextAttemptAfter"] == "2026-01-02T03:04:35Z"
    assert d.events[0].type == "Warning"
    assert not any(c["kind"] == "Pod" for c in d.create)
    later = next_status(observed(**_status(d), pods=(pod("Failed", exit_code=5),), now=NOW + timedelta(seconds=31)),
                        settings)
    assert kinds(later.create)[-1] == ("Pod", "demo-driver-2")


def test_retry_delay_is_exponential_and_capped():
    s = Settings(retry_base_seconds=10, retry_max_seconds=35)
    assert [retry_delay(n, s) for n in (1, 2, 3, 4)] == [10, 20, 35, 35]


def test_backoff_limit_fails_the_job():
    d = next_status(observed("Running", raw_spec=spec(backoffLimit=1), pods=(pod("Failed", 2, exit_code=1),),
                             attempt=2, failures=1, driver_pod="demo-driver-2"), SETTINGS)
    assert d.status["phase"] == "Failed" and d.status["reason"] == "BackoffLimitExceeded"


def test_vanished_driver_counts_as_a_failed_attempt():
    d = next_status(observed("Running", attempt=1, driver_pod="demo-driver-1"), SETTINGS)
    assert d.status["attempt"] == 2 and d.status["failures"] == 1
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "DriverLost"), ("Normal", "DriverStarting")]


def test_stop_while_running_deletes_driver_before_cluster():
    d = next_status(observed("Running", raw_spec=RAY, stop=True, pods=(pod("Running"),), attempt=1,
                             driver_pod="demo-driver-1", cluster=ClusterState("demo-ray", "ready")), SETTINGS)
    assert kinds(d.delete) == [("Pod", "demo-driver-1")]
    assert d.status["phase"] == "Stopping"


def test_stop_waits_for_a_terminating_driver_then_deletes_cluster_then_is_stopped():
    base = dict(raw_spec=RAY, stop=True, attempt=1, driver_pod="demo-driver-1", reason="StopRequested")
    d = next_status(observed("Stopping", pods=(pod("Running", deleting=True),),
                             cluster=ClusterState("demo-ray", "ready"), **base), SETTINGS)
    assert d.delete == [] and d.status["phase"] == "Stopping" and d.events == []
    d = next_status(observed("Stopping", pods=(pod("Failed", exit_code=130, deleting=True),),
                             cluster=ClusterState("demo-ray", "ready"), **base), SETTINGS)
    assert kinds(d.delete) == [("RayCluster", "demo-ray")] and d.status["phase"] == "Stopping"
    d = next_status(observed("Stopping", cluster=ClusterState("demo-ray", "ready", deleting=True), **base), SETTINGS)
    assert d.delete == [] and d.status["phase"] == "Stopping"
    d = next_status(observed("Stopping", **base), SETTINGS)
    assert d.status["phase"] == "Stopped" and [e.reason for e in d.events] == ["Stopped"]


def test_unstopping_resumes_as_a_new_attempt_of_the_same_job():
    d = next_status(observed("Stopped", attempt=1, driver_pod="demo-driver-1", exit_code=130), SETTINGS)
    assert d.status["phase"] == "Pending" and d.status["attempt"] == 2
    assert "exitCode" not in d.status
    assert kinds(d.create)[-1] == ("Pod", "demo-driver-2")
    assert [e.reason for e in d.events] == ["Resuming", "DriverStarting"]


def test_stop_withdrawn_mid_stop_waits_for_the_old_driver_to_exit():
    d = next_status(observed("Stopping", pods=(pod("Running", deleting=True),), attempt=1,
                             driver_pod="demo-driver-1"), SETTINGS)
    assert d.status["phase"] == "Stopping" and d.create == []
    d = next_status(observed("Stopping", attempt=1, driver_pod="demo-driver-1"), SETTINGS)
    assert d.status["attempt"] == 2 and kinds(d.create)[-1] == ("Pod", "demo-driver-2")


def test_stop_after_success_changes_nothing():
    d = next_status(observed("Succeeded", stop=True, pods=(pod("Succeeded", exit_code=0),), attempt=1), SETTINGS)
    assert d.status["phase"] == "Succeeded" and d.delete == [] and d.events == []


def test_a_failed_job_can_be_retried_by_stop_then_unstop():
    d = next_status(observed("Failed", stop=True, attempt=1, failures=3, reason="BackoffLimitExceeded"), SETTINGS)
    assert d.status["phase"] == "Stopped"
    d = next_status(observed("Stopped", attempt=1, failures=3), SETTINGS)
    assert d.status["attempt"] == 2 and d.status["failures"] == 0


def test_invalid_spec_fails_and_stops_what_runs():
    o = Observed(name="demo", namespace="ns", uid=UID, now=NOW, spec=None, spec_error="spec.x: bad",
                 pods=(pod("Running"),), cluster=ClusterState("demo-ray", "ready"))
    d = next_status(o, SETTINGS)
    assert d.status["phase"] == "Failed" and d.status["reason"] == "InvalidSpec" and d.status["message"] == "spec.x: bad"
    assert kinds(d.delete) == [("Pod", "demo-driver-1"), ("RayCluster", "demo-ray")]


def test_fixed_spec_restarts_a_job_that_failed_on_its_spec():
    d = next_status(observed("Failed", reason="InvalidSpec", attempt=1), SETTINGS)
    assert d.status["phase"] == "Pending" and kinds(d.create)[-1] == ("Pod", "demo-driver-2")


def test_teardown_deletes_drivers_first_and_waits_for_them():
    o = observed("Running", raw_spec=RAY, pods=(pod("Running"), pod("Failed", 0, exit_code=1)),
                 cluster=ClusterState("demo-ray", "ready"))
    d = teardown(o)
    assert kinds(d.delete) == [("Pod", "demo-driver-1"), ("Pod", "demo-driver-0"),
                               ("ConfigMap", "demo-recipe"), ("PersistentVolumeClaim", "demo-state")]
    assert d.waiting
    d = teardown(observed("Running", raw_spec=RAY, cluster=ClusterState("demo-ray", "ready")))
    assert ("RayCluster", "demo-ray") in kinds(d.delete) and d.waiting
    assert not teardown(observed("Running", present=frozenset())).waiting


def test_teardown_retains_the_state_pvc_on_request():
    d = teardown(observed("Succeeded", raw_spec=spec(eventLog={"retain": True})))
    assert kinds(d.delete) == [("ConfigMap", "demo-recipe")]


def test_status_patch_nulls_removed_keys_and_replaces_lists():
    old = {"phase": "Running", "nextAttemptAfter": "t", "progress": {"currentOps": [{"partition": "1"}], "percent": 5}}
    new = {"phase": "Running", "progress": {"currentOps": [], "percent": 5}}
    assert status_patch(old, new) == {"nextAttemptAfter": None, "progress": {"currentOps": []}}


def test_completed_progress_accounts_every_partition():
    p = completed_progress({"partitions": {"total": 4, "completed": 2, "failed": 0, "running": 2},
                            "samples": {"processed": 10, "total": 40}}, NOW)
    assert p["partitions"] == {"total": 4, "completed": 4, "failed": 0, "running": 0}
    assert p["samples"]["processed"] == 40 and p["percent"] == 100.0
