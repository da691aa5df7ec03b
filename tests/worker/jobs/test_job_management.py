"""Job management over real runs and job files: what the monitor shows when events are lost, finding and
stopping a job that logs no events, and a resumption command that works from anywhere."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from djworker.jobs import resumption_command
from djworker.jobs.common import list_running_jobs
from djworker.jobs.monitor import JobProgressMonitor, monitor_job_until_completion
from djworker.jobs.render import render
from djworker.jobs.stopper import stop_job
from tests.support.engine import REPO, dj_process, env_with, make_recipe, start_dj_process, summary, wait_exit
from tests.support.wait import wait_for
from tests.worker.jobs.jobfiles import event, partition_run


def monitor_of(tmp: Path, job_id: str) -> dict:
    return JobProgressMonitor(job_id, str(tmp / "jobs")).get_progress_data()


@pytest.mark.parametrize("event_logging", [
    {"max_log_size_mb": 0.002, "backup_count": 1},  # rotation drops the run's start and early partitions
    {"enabled": False},
])
def test_a_completed_job_shows_complete_whatever_happened_to_its_events(tmp_path, event_logging):
    recipe = make_recipe(tmp_path, rows=500, event_logging=event_logging)
    assert dj_process(recipe, "j").returncode == 0
    o = monitor_of(tmp_path, "j")["overall_progress"]
    assert o["job_status"] == "completed" and o["progress_percentage"] == 100.0
    assert o["partitions"] == {"completed": 5, "processing": 0, "failed": 0, "pending": 0, "total": 5}


def test_a_running_job_without_event_log_is_listed_and_stopped(tmp_path):
    recipe = make_recipe(tmp_path, rows=400, event_logging={"enabled": False},
                         process=[{"slow_mapper": {"seconds": 30}}])
    driver = start_dj_process(recipe, "quiet")
    base = str(tmp_path / "jobs")
    try:
        running = wait_for(lambda: list_running_jobs(base), 60, "the job listed as running", process=driver)
        assert [j["job_id"] for j in running] == ["quiet"]
        result = stop_job("quiet", force=True, base_dir=base)
        assert (result["outcome"], result["success"]) == ("killed", True), result
        assert wait_exit(driver, 30) != 0
        assert summary(tmp_path, "quiet")["status"] == "stopped"
    finally:
        if driver.poll() is None:
            driver.kill()


def test_the_resumption_command_resumes_from_any_directory_with_each_flag_once(tmp_path):
    poison = tmp_path / "poison"
    poison.touch()
    recipe = make_recipe(tmp_path, rows=300, retry={"max_retries": 0},
                         process=[{"flaky_mapper": {"state_dir": str(tmp_path / "fl"), "poison_file": str(poison),
                                                    "first_ids": [100]}}, {"clean_links_mapper": {}}])
    cmd = [sys.executable, "-m", "djworker.cli.process", "--config", recipe.name, "--job-id=r", "--quiet",
           "--np", "1", "--np", "2"]
    run = subprocess.run(cmd, env=env_with(), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 6, run.stderr
    stored = summary(tmp_path, "r")["resumption_command"]
    assert stored == f"dj-process --config {recipe} --job_id r --np 2"
    poison.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = stored.replace("dj-process", f"{sys.executable} -m djworker.cli.process", 1)
    run = subprocess.run(again, shell=True, env=env_with(), capture_output=True, text=True, timeout=120, cwd=elsewhere)
    assert run.returncode == 0, run.stderr
    assert summary(tmp_path, "r")["status"] == "completed" and summary(tmp_path, "r")["attempts"] == 2


def test_relative_recipe_paths_are_pinned_absolute_in_the_resumption_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = type("R", (), {"dataset_path": "in.jsonl", "export_path": "s3://b/out.jsonl", "work_dir": "./w",
                            "checkpoint_dir": None, "event_log_dir": None})()
    command = resumption_command("r.yaml", "j", ["--work_dir", "./mine", "--quiet"], recipe)
    assert command == f"dj-process --config {tmp_path}/r.yaml --job_id j --work_dir ./mine " \
                      f"--dataset_path {tmp_path}/in.jsonl"


def finished_job(fake_job, n: int, status_event: str = "JOB_COMPLETE", driver: str = "gone"):
    job = fake_job()
    job.write_summary(driver=driver)
    job.write_plan([100] * n)
    t0 = time.time() - 100
    evs = [event("JOB_START", t0)]
    for pid in range(n):
        evs += partition_run(pid, t0, ["a_mapper", "b_filter"])
        evs.append(event("PARTITION_COMPLETE", t0 + 3, partition_id=pid, rows_in=100, rows_out=100))
    job.append(*evs, *([event(status_event, t0 + 5)] if status_event else []))
    return job


def test_detail_lists_each_partitions_checkpoint_per_op_with_its_time(fake_job):
    job = finished_job(fake_job, 2)
    data = JobProgressMonitor(job.job_id, str(job.base_dir)).get_progress_data(detailed=True)
    saved = data["checkpoint_summary"]["saved"]
    assert [(c["partition_id"], c["op_idx"], c["op_name"]) for c in saved] == \
        [(0, 0, "a_mapper"), (0, 1, "b_filter"), (1, 0, "a_mapper"), (1, 1, "b_filter")]
    assert all(c["timestamp"] for c in saved)
    console = Console(width=200, record=True)
    console.print(render(data, detailed=True))
    assert "Checkpoints per partition and op" in console.export_text()
    assert "saved" not in JobProgressMonitor(job.job_id, str(job.base_dir)).get_progress_data()["checkpoint_summary"]


def test_a_long_partition_table_says_what_it_leaves_out(fake_job):
    job = finished_job(fake_job, 45)
    data = JobProgressMonitor(job.job_id, str(job.base_dir)).get_progress_data()
    console = Console(width=200, record=True)
    console.print(render(data))
    assert "45 of 45 partitions not listed (45 completed); --detailed lists every partition" in console.export_text()


@pytest.mark.parametrize("end, driver, status", [("JOB_STOPPED", "gone", "stopped"), (None, "gone", "interrupted"),
                                                 ("JOB_FAILED", "gone", "failed")])
def test_monitoring_until_completion_ends_for_every_final_state(fake_job, end, driver, status):
    job = finished_job(fake_job, 2, status_event=end, driver=driver)
    data = monitor_job_until_completion(job.job_id, check_interval=0.05, base_dir=str(job.base_dir))
    assert data["overall_progress"]["job_status"] == status
