from datetime import datetime, timezone

from djoperator.observe import cluster_state, pod_state, progress_url
from djoperator.settings import Settings

from .factories import UID


def driver(**status) -> dict:
    return {"metadata": {"name": "demo-driver-2", "labels": {"datajuicer.io/attempt": "2"},
                         "annotations": {"datajuicer.io/progress-endpoint": "http://127.0.0.1:4242"}},
            "spec": {"containers": [{"name": "driver", "ports": [{"name": "progress", "containerPort": 8123}]}]},
            "status": status}


def test_pod_state_reads_exit_code_and_termination_message():
    p = pod_state(driver(phase="Failed", containerStatuses=[
        {"name": "driver", "state": {"terminated": {"exitCode": 5, "reason": "Error",
                                                    "message": "line one\nStorageUnavailable: bucket gone"}}}]))
    assert (p.attempt, p.phase, p.exit_code, p.message) == (2, "Failed", 5, "StorageUnavailable: bucket gone")


def test_pod_state_knows_a_terminating_pod_and_its_deadline():
    raw = driver(phase="Running")
    raw["metadata"]["deletionTimestamp"] = "2026-01-02T03:04:05Z"
    p = pod_state(raw)
    assert p.deleting and p.deletion_deadline == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert pod_state({"metadata": {"name": "x"}}).phase == "Pending"


def test_progress_url_is_pod_ip_and_port_unless_the_annotation_setting_is_on():
    raw = driver(phase="Running", podIP="10.1.2.3")
    assert progress_url(raw, Settings()) == "http://10.1.2.3:8123/progress"
    with_annotation = Settings(progress_endpoint_annotation="datajuicer.io/progress-endpoint")
    assert progress_url(raw, with_annotation) == "http://127.0.0.1:4242/progress"
    assert progress_url(driver(phase="Pending"), Settings()) is None


def test_a_same_named_cluster_this_job_does_not_own_is_foreign():
    ours = {"metadata": {"name": "demo-ray", "labels": {"datajuicer.io/job-uid": UID}}, "status": {"state": "ready"}}
    theirs = {"metadata": {"name": "demo-ray", "labels": {}}, "status": {"state": "ready"}}
    assert cluster_state(ours, UID).is_ready
    assert cluster_state(theirs, UID).foreign and not cluster_state(theirs, UID).is_ready
    assert not cluster_state(ours, UID).foreign and cluster_state(None, UID) is None


def test_container_creating_is_blocked_when_warning_events_say_it_will_not_end():
    st = {"phase": "Pending", "containerStatuses": [
        {"name": "driver", "state": {"waiting": {"reason": "ContainerCreating"}}}]}
    assert pod_state(driver(**st)).blocked is None
    p = pod_state(driver(**st), ['FailedMount: MountVolume.SetUp failed for volume "recipe": configmap "reciep" not found'])
    assert p.blocked.startswith("FailedMount") and "reciep" in p.blocked
