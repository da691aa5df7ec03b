"""Status a user can act on: where to look (dashboards), what a stop left (the checkpoint
the next attempt resumes from), and which spec generation each condition describes."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from djoperator.observed import ClusterState
from djoperator.status import next_status

from .factories import NOW, SETTINGS, observed, pod, spec
from .test_status import PROGRESS, RUNNING, carried

RAY = spec(executorType="ray_partitioned")


def test_status_points_at_the_job_dashboard_and_the_ray_dashboard():
    d = next_status(observed("Running", pods=(pod("Running"),), **RUNNING), SETTINGS)
    assert d.status["dashboardURL"] == "http://demo-dashboard.ns.svc:8000"
    assert "rayDashboardURL" not in d.status  # executor default has no Ray cluster
    d = next_status(observed("Running", raw_spec=RAY, pods=(pod("Running"),),
                             cluster=ClusterState("demo-ray", "ready"), **RUNNING), SETTINGS)
    assert d.status["rayDashboardURL"] == "http://demo-ray-head-svc.ns.svc:8265"


def test_reaching_stopped_records_the_final_checkpoint_reported_during_the_flush():
    base = dict(stop=True, **RUNNING)
    # the driver, told to stop, is still flushing: its last report names the final checkpoint
    flushing = {**PROGRESS, "last_checkpoint": {"path": "s3://b/c/final.parquet", "time": "2026-01-02T03:04:00Z"}}
    d = next_status(observed("Running", pods=(pod("Running", deleting=True),), endpoint=flushing, **base), SETTINGS)
    assert d.status["phase"] == "Stopping"
    assert d.status["checkpoint"]["lastCheckpointPath"] == "s3://b/c/final.parquet"
    later = NOW + timedelta(seconds=30)
    d = next_status(observed(now=later, **{**carried(d), "stop": True}), SETTINGS)
    cp = d.status["checkpoint"]
    assert d.status["phase"] == "Stopped"
    assert cp["finalCheckpointPath"] == "s3://b/c/final.parquet" and cp["finalCheckpointTime"] == "2026-01-02T03:04:00Z"
    assert cp["resumable"] is True and cp["stoppedAt"] == "2026-01-02T03:04:35Z"
    # a further reconcile of the stopped job leaves the record as it was
    again = next_status(observed(now=later + timedelta(hours=1), **{**carried(d), "stop": True}), SETTINGS)
    assert again.status["checkpoint"] == cp


def test_a_stop_before_any_checkpoint_says_it_is_not_resumable():
    d = next_status(observed("Stopping", stop=True, reason="StopRequested", **RUNNING), SETTINGS)
    assert d.status["phase"] == "Stopped"
    assert d.status["checkpoint"]["resumable"] is False and "finalCheckpointPath" not in d.status["checkpoint"]


def test_each_condition_carries_the_generation_it_describes():
    o = replace(observed("Running", pods=(pod("Running"),), **RUNNING), generation=7)
    d = next_status(o, SETTINGS)
    assert {c["type"]: c["observedGeneration"] for c in d.status["conditions"]} == {
        t: 7 for t in ("ClusterReady", "DriverRunning", "Progressing", "Stopped", "Complete", "Failed", "SpecValid")}
