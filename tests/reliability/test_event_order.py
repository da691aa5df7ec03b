"""The event log's order: a partition's own events (written by its worker) come before the driver's
PARTITION_COMPLETE, and the fold stays right when a late one slips through anyway.

Chaos runs found both: worker events travel through a queue drained by a thread, the result
through the pool's pipe, so a busy driver could record the completion first; the fold then
reopened the partition and a completed job showed partitions 'pending'."""
from __future__ import annotations

import os
import time


from djworker.config import load_recipe
from djworker.engine import run_job
from djworker.jobs.liveness import MARKER_ENV
from djworker.progress import progress
from tests.support.chaos import late_worker_events
from tests.support.engine import event_types, events, make_recipe


def ev(event_type: str, pid: int = 0, **fields) -> dict:
    return {"event_type": event_type, "partition_id": pid, "timestamp": time.time(), "job_id": "j", **fields}


PLAN = {"partitions": [{"partition_id": 0, "sample_count": 10}], "total_samples": 10}


def test_a_partition_start_that_lands_after_its_completion_does_not_reopen_it():
    log = [{"event_type": "JOB_START", "timestamp": 1, "job_id": "j"},
           ev("PARTITION_COMPLETE", rows_out=10), ev("PARTITION_START"), ev("OP_START", op_name="x"),
           {"event_type": "JOB_COMPLETE", "timestamp": 2, "job_id": "j"}]
    fold = progress(log, PLAN, 3).model_dump()
    assert fold["partition_status"]["0"]["status"] == "completed"
    assert fold["overall_progress"]["partitions"]["completed"] == 1 and fold["overall_progress"]["progress_percentage"] == 100


def test_a_partition_started_again_in_a_later_run_is_processing_again():
    """After a recipe change a completed partition runs again: only a start in the *same* run is stale."""
    log = [{"event_type": "JOB_START", "timestamp": 1, "job_id": "j"}, ev("PARTITION_COMPLETE", rows_out=10),
           {"event_type": "JOB_COMPLETE", "timestamp": 2, "job_id": "j"},
           {"event_type": "JOB_RESUMED", "timestamp": 3, "job_id": "j"}, ev("PARTITION_START")]
    assert progress(log, PLAN, 4).model_dump()["partition_status"]["0"]["status"] == "processing"


def test_the_next_stage_of_a_staged_job_starts_after_the_first_one_completed():
    log = [{"event_type": "JOB_START", "timestamp": 1, "job_id": "j"},
           ev("PARTITION_COMPLETE", stage=0, stages=2), ev("PARTITION_START", stage=1, stages=2)]
    assert progress(log, PLAN, 2).model_dump()["partition_status"]["0"]["status"] == "processing"


def test_a_partitions_worker_events_are_written_before_its_completion(tmp_path, monkeypatch):
    """A driver slow to write worker events (a busy disk, a loaded machine) must still log a
    partition's own events before its PARTITION_COMPLETE."""
    monkeypatch.delenv(MARKER_ENV, raising=False)  # the in-process driver sets it; leave pytest's env as it was
    recipe = load_recipe(make_recipe(tmp_path, rows=200, np=2))
    me = os.getpid()

    def slow_writer(event: dict) -> None:
        if event["pid"] != me:
            time.sleep(0.03)

    assert run_job(recipe, "order", on_event=slow_writer).status == "completed"
    evs = events(tmp_path, "order")
    assert event_types(evs)[-1] == "JOB_COMPLETE"
    assert late_worker_events(evs) == []
