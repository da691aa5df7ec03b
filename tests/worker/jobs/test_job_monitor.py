"""The monitor over job directories written on disk: totals, ETA, failures, statuses, display."""
from __future__ import annotations

import io
import json
import os
import subprocess
import threading
import time

import pytest
from rich.console import Console

from djworker.cli import monitor as monitor_cli
from djworker.jobs.common import JobNotFound, JobReader, list_running_jobs
from djworker.jobs.monitor import JobProgressMonitor, show_job_progress
from djworker.jobs.paths import JobPaths
from djworker.progress import operation_summary

from tests.worker.jobs.jobfiles import event, partition_run

OPS = ["a_mapper", "b_filter"]


def running_job(fake_job, counts=(100, 100, 100, 100), driver="alive"):
    """Partition 0 done 10 s into the run, partition 1 mid-way; 2 and 3 not yet seen in any event."""
    job = fake_job()
    job.write_summary(driver=driver)
    job.write_plan(list(counts))
    t0 = time.time() - 20
    job.append(event("JOB_START", t0), *partition_run(0, t0, OPS, rows_out=[100, 80]),
               event("PARTITION_COMPLETE", t0 + 10, partition_id=0, rows_in=100, rows_out=80),
               event("PARTITION_START", t0 + 10, partition_id=1, rows_in=100),
               event("OP_START", t0 + 10, partition_id=1, op_idx=0, op_name="a_mapper", rows_in=100))
    return job


def test_totals_come_from_the_plan_not_from_events_seen_so_far(fake_job):
    job = running_job(fake_job, counts=(100, 100, 100, 50))
    o = JobProgressMonitor(job.job_id, str(job.base_dir)).get_progress_data()["overall_progress"]
    assert o["job_status"] == "running"
    assert o["partitions"] == {"completed": 1, "processing": 1, "failed": 0, "pending": 2, "total": 4}
    assert o["samples"]["processed"] == 100 and o["samples"]["total"] == 350
    assert o["progress_percentage"] == pytest.approx(100 * 100 / 350, abs=0.01)


def test_eta_comes_from_samples_completed_in_this_run(fake_job):
    job = running_job(fake_job)
    o = JobProgressMonitor(job.job_id, str(job.base_dir)).get_progress_data()["overall_progress"]
    # 100 samples in the first 20 s of the run: 300 left at 5 samples/s.
    assert o["eta_seconds"] == pytest.approx(60, abs=2)
    assert o["elapsed_time_seconds"] == pytest.approx(20, abs=2)


def test_no_eta_before_anything_completed_or_after_the_end(fake_job):
    job = fake_job()
    job.write_summary()
    job.write_plan([100, 100])
    job.append(event("JOB_START", time.time() - 5), event("PARTITION_START", time.time() - 4, partition_id=0))
    assert JobProgressMonitor(job.job_id, str(job.base_dir)).get_progress_data()["overall_progress"]["eta_seconds"] is None
    job.append(event("JOB_STOPPED", time.time()))
    data = JobProgressMonitor(job.job_id, str(job.base_dir)).get_progress_data()
    assert data["overall_progress"]["eta_seconds"] is None
    assert data["overall_progress"]["job_status"] == "stopped"
    assert data["partition_status"]["0"]["status"] == "pending"  # stopped, not still "processing"


def test_failed_partitions_are_counted(fake_job):
    job = fake_job()
    job.write_summary(status="failed", driver="gone", error="1 of 3 partitions failed")
    job.write_plan([100, 100, 100])
    t0 = time.time() - 30
    job.append(event("JOB_START", t0))
    for pid in (0, 2):
        job.append(*partition_run(pid, t0, OPS), event("PARTITION_COMPLETE", t0 + 3, partition_id=pid, rows_out=100))
    job.append(event("PARTITION_START", t0, partition_id=1),
               event("PARTITION_FAILED", t0 + 1, partition_id=1, retry_count=0, error="RuntimeError: x", final=False),
               event("PARTITION_START", t0 + 2, partition_id=1, retry_count=1),
               event("PARTITION_FAILED", t0 + 3, partition_id=1, retry_count=1, error="RuntimeError: x", final=True),
               event("JOB_FAILED", t0 + 4, error="1 of 3 partitions failed"))
    data = show_job_progress(job.job_id, base_dir=str(job.base_dir))
    o = data["overall_progress"]
    assert o["job_status"] == "failed"
    assert o["partitions"] == {"completed": 2, "processing": 0, "failed": 1, "pending": 0, "total": 3}
    assert data["partition_status"]["1"]["retries"] == 1
    assert data["partition_status"]["1"]["error"] == "RuntimeError: x"


def test_event_log_is_found_through_the_summary_not_beside_the_job(fake_job):
    job = running_job(fake_job)
    assert not os.path.exists(JobPaths.recorded(str(job.base_dir), job.job_id).event_dir)  # the default place
    reader = JobReader(job.job_id, str(job.base_dir))
    assert reader.paths.event_dir == str(job.event_dir)
    assert reader.events()[0]["event_type"] == "JOB_START"
    assert reader.require().status == "running"


@pytest.mark.parametrize("driver", ["gone", "reused"])
def test_a_driver_that_died_without_an_end_event_is_interrupted(fake_job, driver):
    job = running_job(fake_job, driver=driver)
    data = JobProgressMonitor(job.job_id, str(job.base_dir)).get_progress_data()
    o = data["overall_progress"]
    assert o["job_status"] == "interrupted"
    assert o["eta_seconds"] is None and o["partitions"]["processing"] == 0
    assert data["job_overview"]["driver"]["state"] == driver


def test_detailed_data_has_per_op_metrics_and_each_retry_counts_once(fake_job):
    job = running_job(fake_job)
    t = time.time()
    job.append(*partition_run(1, t - 5, OPS[:1], rows_out=[50]))  # a retry re-ran op 0 of partition 1
    plain = JobProgressMonitor(job.job_id, str(job.base_dir)).get_progress_data()
    detailed = JobProgressMonitor(job.job_id, str(job.base_dir)).get_progress_data(detailed=True)
    assert "operation_metrics" not in plain
    assert len(detailed["operation_metrics"]) == 3
    by_op = {op["op_name"]: op for op in detailed["operation_summary"]}
    assert by_op["a_mapper"]["partitions"] == 2 and by_op["a_mapper"]["rows_in"] == 200
    assert by_op["b_filter"]["reduction_ratio"] == pytest.approx(0.2)
    assert by_op["b_filter"]["throughput_rows_s"] == pytest.approx(100.0)


def test_operation_summary_of_nothing_is_empty():
    assert operation_summary([]) == []


def test_unknown_job_is_a_file_not_found_naming_the_base_dir(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="--base-dir"):
        JobProgressMonitor("nope", str(tmp_path)).get_progress_data()
    assert monitor_cli.main(["nope", "--base-dir", str(tmp_path)]) == JobNotFound.exit_code == 1
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("status,driver", [("running", "alive"), ("completed", "gone"), ("failed", "gone"),
                                           ("stopped", "gone"), ("running", "gone")])
def test_display_renders_every_state(fake_job, status, driver):
    job = running_job(fake_job, driver=driver)
    if status != "running":
        job.write_summary(status=status, driver=driver, error="boom" if status == "failed" else None)
        job.append(event({"completed": "JOB_COMPLETE", "failed": "JOB_FAILED", "stopped": "JOB_STOPPED"}[status],
                         time.time()))
    out = io.StringIO()
    data = JobProgressMonitor(job.job_id, str(job.base_dir)).display_progress(
        detailed=True, console=Console(file=out, width=140, force_terminal=False))
    expected = "interrupted" if (status, driver) == ("running", "gone") else status
    assert data["overall_progress"]["job_status"] == expected
    assert job.job_id in out.getvalue()


def test_json_output_is_the_same_dict(fake_job, capsys):
    job = running_job(fake_job)
    assert monitor_cli.main([job.job_id, "--base-dir", str(job.base_dir), "--json", "--detailed"]) == 0
    printed = json.loads(capsys.readouterr().out)
    direct = JobProgressMonitor(job.job_id, str(job.base_dir)).get_progress_data(detailed=True)
    for key in ("partition_status", "operation_metrics", "operation_summary", "checkpoint_summary", "job_overview"):
        assert printed[key] == json.loads(json.dumps(direct[key]))
    assert printed["overall_progress"]["partitions"] == direct["overall_progress"]["partitions"]


def test_watch_redraws_in_place_and_stops_when_the_job_ends(fake_job, monkeypatch):
    job = running_job(fake_job)

    def no_shell(*args, **kwargs):
        raise AssertionError("the monitor must not shell out (e.g. to `clear`)")
    monkeypatch.setattr(os, "system", no_shell)
    monkeypatch.setattr(subprocess, "Popen", no_shell)
    finisher = threading.Timer(0.5, lambda: job.append(event("JOB_COMPLETE", time.time())))
    finisher.start()
    out = io.StringIO()
    t0 = time.time()
    data = JobProgressMonitor(job.job_id, str(job.base_dir)).watch(
        interval=0.1, console=Console(file=out, width=120, force_terminal=True))
    finisher.join()
    assert data["overall_progress"]["job_status"] == "completed"
    assert time.time() - t0 < 5
    assert "\x1b[2J" not in out.getvalue()  # no clear-screen; rich moves the cursor up instead


def test_watch_json_prints_one_line_per_update_until_the_end(fake_job, capsys):
    job = running_job(fake_job)
    threading.Timer(0.35, lambda: job.append(event("JOB_STOPPED", time.time()))).start()
    assert monitor_cli.main([job.job_id, "--base-dir", str(job.base_dir), "--watch", "--json", "--interval", "0.1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) >= 2
    assert lines[0]["overall_progress"]["job_status"] == "running"
    assert lines[-1]["overall_progress"]["job_status"] == "stopped"


def test_only_jobs_whose_driver_verifiably_runs_are_listed(fake_job):
    live = running_job(fake_job)
    for job_id, status, driver in [("stale", "running", "reused"), ("dead", "running", "gone"),
                                   ("done", "completed", "alive")]:
        fake_job(job_id).write_summary(status=status, driver=driver)
    jobs = list_running_jobs(str(live.base_dir))
    assert [j["job_id"] for j in jobs] == [live.job_id]
    assert jobs[0]["pid"] == os.getpid() and jobs[0]["partitions"]["total"] == 4
    assert jobs[0]["progress_percentage"] == 25.0


def test_a_running_job_shows_its_latest_resource_sample(fake_job):
    job = running_job(fake_job)
    now = time.time()
    job.append(event("RESOURCE_USAGE", now - 8, rss_mb=300.0, peak_rss_mb=310.0, cpu_percent=150.0, processes=3),
               event("RESOURCE_USAGE", now - 1, rss_mb=512.4, peak_rss_mb=530.0, cpu_percent=198.6, processes=3,
                     time="2026-11-29T20:15:07.123+00:00"))
    out = io.StringIO()
    data = JobProgressMonitor(job.job_id, str(job.base_dir)).display_progress(
        console=Console(file=out, width=140, force_terminal=False))
    assert data["resource_usage"]["rss_mb"] == 512.4 and data["performance"] is None
    assert "RSS 512 MB (peak 530 MB), CPU 199%, 3 processes, at 20:15:07" in out.getvalue()
    assert "Last run" not in out.getvalue()
