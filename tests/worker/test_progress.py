"""The typed progress fold: its /progress wire model pinned to what the operator parses, and the
reconciliation with what survives lost events."""
from __future__ import annotations

import pytest

from djoperator.progress import progress_fields
from djworker.progress import LiveProgress, live, progress, reconcile
from tests.worker.jobs.jobfiles import event, partition_run

PLAN = {"total_samples": 300, "rejected_samples": 0,
        "partitions": [{"partition_id": i, "sample_count": 100} for i in range(3)]}


def running_events() -> list[dict]:
    return [event("JOB_START", 0.5), *partition_run(0, 1.0, ["a_mapper"]),
            event("PARTITION_COMPLETE", 3.0, partition_id=0, rows_in=100, rows_out=90),
            event("PARTITION_START", 3.0, partition_id=1, rows_in=100),
            event("OP_START", 3.5, partition_id=1, op_idx=0, op_name="a_mapper")]


def test_the_operator_reads_every_field_of_the_live_model_it_needs():
    wire = live(progress(running_events(), PLAN, now=4.0)).model_dump(mode="json")
    fields = progress_fields(wire)
    assert fields is not None
    assert fields["partitions"] == {"total": 3, "completed": 1, "failed": 0, "running": 1}
    assert fields["samples"] == {"processed": 100, "total": 300}
    assert fields["progress"]["percent"] == pytest.approx(33.3)
    assert fields["progress"]["currentOps"] == [{"partition": "1", "op": "a_mapper"}]
    assert fields["checkpoint"]["lastCheckpointPath"] == "/ckpt/p0-0.json"
    assert "etaSeconds" in fields["progress"]


def test_the_live_model_has_exactly_the_keys_the_operator_parses():
    schema = LiveProgress.model_json_schema()
    props, defs = schema["properties"], schema["$defs"]
    assert set(props) >= {"partitions", "samples", "progress_percent", "current_ops", "last_checkpoint", "eta_seconds"}
    assert set(defs["LivePartitions"]["properties"]) == {"total", "completed", "failed", "running"}
    assert set(defs["LiveSamples"]["properties"]) == {"processed", "total"}
    assert set(defs["LastCheckpoint"]["properties"]) == {"path", "time"}


def test_a_driver_that_died_mid_run_shows_interrupted_with_nothing_processing():
    data = reconcile(progress(running_events(), PLAN, now=10.0), PLAN, 10.0, "running", driver_dead=True)
    o = data.overall_progress
    assert o.job_status == "interrupted" and o.eta_seconds is None
    assert (o.partitions.processing, o.partitions.pending, o.partitions.completed) == (0, 2, 1)


def test_the_report_and_summary_stand_in_for_lost_events():
    report = {"partitions": [{"partition_id": 0, "status": "completed", "output_samples": 90},
                             {"partition_id": 1, "status": "completed", "output_samples": 80}]}
    data = reconcile(progress([], PLAN, now=10.0), PLAN, 10.0, "running", start_time=4.0, report=report)
    o = data.overall_progress
    assert o.job_status == "running" and o.partitions.completed == 2 and o.samples.output == 170
    assert o.elapsed_time_seconds == 6.0
    done = reconcile(progress([], PLAN, now=10.0), PLAN, 10.0, "completed", start_time=4.0, end_time=8.0)
    assert done.overall_progress.progress_percentage == 100.0 and done.overall_progress.elapsed_time_seconds == 4.0
