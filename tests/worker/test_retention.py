"""Retention: retention_policy / cleanup_on_success at a job's end, max_retention_days across old
jobs (at every job end and with `dj-process --cleanup`). Output, summary, metadata and the
event log are never removed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from djworker.export import partial_export_paths
from djworker.jobs import JobPaths, process_identity
from djworker.retention import apply_at_end, cleanup_old_jobs, is_expired, should_clean
from djworker.storage import Storage
from tests.support.engine import REPO, dj_process, env_with, make_recipe, output_rows

DAY = 86400.0


# ---- core -------------------------------------------------------------------------
@pytest.mark.parametrize("policy, on_success, succeeded, clean", [
    ("keep_all", False, True, False), ("keep_all", False, False, False), ("keep_all", True, True, True),
    ("keep_failed_only", False, True, True), ("keep_failed_only", False, False, False),
    ("cleanup_all", False, True, True), ("cleanup_all", False, False, True), ("cleanup_all", True, False, True),
])
def test_should_clean_follows_policy_and_cleanup_on_success(policy, on_success, succeeded, clean):
    assert should_clean(policy, on_success, succeeded) is clean


@pytest.mark.parametrize("summary, days, alive, expired", [
    ({"end_time": 0.0}, 7, False, True),
    ({"end_time": 6 * DAY}, 7, False, False),
    ({"end_time": 0.0}, None, False, False),               # no max_retention_days: nothing expires
    ({"end_time": 0.0}, 0, False, True),
    ({"status": "running", "start_time": 0.0}, 7, True, False),   # a live run is never touched
    ({"status": "running", "start_time": 0.0, "run_start_time": 1 * DAY}, 7, False, True),  # crashed long ago
    ({}, 7, False, False),                                 # no times recorded: keep
])
def test_is_expired_ages_jobs_from_their_last_run(summary, days, alive, expired):
    assert is_expired(summary, days, now=8 * DAY, driver_alive=alive) is expired


# ---- shell over real directories ------------------------------------------------------
def fake_recipe(tmp: Path, **storage) -> SimpleNamespace:
    cfg = {"retention_policy": "keep_all", "cleanup_on_success": False, "max_retention_days": 7, **storage}
    return SimpleNamespace(work_dir=str(tmp / "work"), checkpoint_dir=str(tmp / "ckpt"), event_log_dir=str(tmp / "ev"),
                           export_path=str(tmp / "out" / "o.jsonl"), intermediate_storage=SimpleNamespace(**cfg))


def fake_job(tmp: Path, recipe: SimpleNamespace, job_id: str, **summary) -> JobPaths:
    paths = JobPaths.of(recipe, job_id)
    for d in [paths.checkpoint_root, f"{paths.data_dir}/partitions", paths.results, f"{paths.intermediate}/partition_000000",
              f"{paths.job_dir}/metadata", paths.event_dir]:
        os.makedirs(d, exist_ok=True)
        Path(d, "x").write_text("data")
    Path(paths.mapping).write_text("{}")
    os.makedirs(os.path.dirname(recipe.export_path), exist_ok=True)
    for p in partial_export_paths(recipe.export_path, job_id):  # an unfinished streamed export
        Path(p).write_text("data")
    record = {"status": "completed", "end_time": time.time(), "job_dir": paths.job_dir, "data_dir": paths.data_dir,
              "checkpoint_dir": paths.checkpoint_root, "event_log_dir": paths.event_dir,
              "export_path": recipe.export_path, **summary}
    Path(paths.summary).write_text(json.dumps(record))
    return paths


def intermediate_left(paths: JobPaths) -> list[str]:
    partial = partial_export_paths(str(Path(paths.job_dir).parents[1] / "out" / "o.jsonl"), paths.job_id)
    return [d for d in [paths.checkpoint_root, f"{paths.data_dir}/partitions", paths.results, paths.intermediate,
                        *partial] if os.path.exists(d)]


def kept_records(paths: JobPaths) -> bool:
    return all(os.path.exists(p) for p in [paths.summary, paths.event_dir, f"{paths.job_dir}/metadata"])


@pytest.mark.parametrize("policy, on_success, status, succeeded, cleaned", [
    ("cleanup_all", False, "failed", False, True),
    ("keep_failed_only", False, "failed", False, False),
    ("keep_failed_only", False, "completed", True, True),
    ("keep_all", True, "completed", True, True),
    ("keep_all", False, "completed", True, False),
    ("cleanup_all", False, "stopped", False, False),   # a stop is a pause: the resume needs the data
])
def test_apply_at_end_removes_only_intermediate_data(tmp_path, policy, on_success, status, succeeded, cleaned):
    recipe = fake_recipe(tmp_path, retention_policy=policy, cleanup_on_success=on_success)
    paths = fake_job(tmp_path, recipe, "j", status=status)
    removed = apply_at_end(Storage(), paths, recipe, succeeded=succeeded)
    assert (intermediate_left(paths) == []) is cleaned and bool(removed) is cleaned
    assert os.path.exists(paths.mapping) is not cleaned  # the plan goes with its partitions: a rerun plans again
    assert kept_records(paths)


def test_old_jobs_lose_intermediate_data_by_age_wherever_their_summary_put_it(tmp_path):
    recipe = fake_recipe(tmp_path)
    now = time.time()
    old = fake_job(tmp_path, recipe, "old", end_time=now - 10 * DAY)
    recent = fake_job(tmp_path, recipe, "recent", end_time=now - 1 * DAY)
    crashed = fake_job(tmp_path, recipe, "crashed", status="running", end_time=None, run_start_time=now - 9 * DAY,
                       process={"pid": 999999, "host": "gone", "process_start_time": 0})
    live = fake_job(tmp_path, recipe, "live", status="running", end_time=None, run_start_time=now - 9 * DAY,
                    process=process_identity())
    moved = fake_recipe(tmp_path / "elsewhere")  # the recipe changed since: the summaries still know
    cleanup_old_jobs(Storage(), recipe.work_dir, 7, moved, now=now)
    assert intermediate_left(old) == [] and intermediate_left(crashed) == []
    assert len(intermediate_left(recent)) == 6 and len(intermediate_left(live)) == 6
    assert not os.path.exists(crashed.mapping) and os.path.exists(recent.mapping)
    assert all(kept_records(p) for p in (old, recent, crashed, live))


# ---- end to end -----------------------------------------------------------------------
def ckpt_and_data(tmp: Path, job: str) -> list[Path]:
    return [p for p in [tmp / "ckpt" / job, tmp / "jobs" / job / "partitions", tmp / "jobs" / job / "results"] if p.exists()]


def test_keep_failed_only_keeps_a_failed_jobs_data_and_cleans_after_it_succeeds(tmp_path):
    poison = tmp_path / "poison"
    poison.touch()
    ops = [{"flaky_mapper": {"state_dir": str(tmp_path / "fl"), "poison_file": str(poison), "first_ids": [100]}},
           {"clean_links_mapper": {}}]
    recipe = make_recipe(tmp_path, rows=300, process=ops, retry={"max_retries": 0},
                         intermediate_storage={"retention_policy": "keep_failed_only"})
    assert dj_process(recipe, "kf").returncode == 6
    assert len(ckpt_and_data(tmp_path, "kf")) == 3  # kept: the resume redoes only partition 1
    poison.unlink()
    assert dj_process(recipe, "kf").returncode == 0
    assert ckpt_and_data(tmp_path, "kf") == []
    assert len(output_rows(tmp_path / "out" / "result.jsonl")) == 300
    assert (tmp_path / "events" / "kf" / "event_logs" / "events.jsonl").exists()
    (tmp_path / "out" / "result.jsonl").unlink()
    assert dj_process(recipe, "kf").returncode == 0  # a cleaned, completed job id runs again from scratch
    assert len(output_rows(tmp_path / "out" / "result.jsonl")) == 300


def test_max_retention_days_sweeps_old_jobs_at_job_end_and_with_cleanup_flag(tmp_path):
    recipe = make_recipe(tmp_path, rows=200)
    assert dj_process(recipe, "first").returncode == 0
    age(tmp_path, "first", days=10)
    assert dj_process(recipe, "second").returncode == 0  # its end sweeps the work dir
    assert ckpt_and_data(tmp_path, "first") == [] and len(ckpt_and_data(tmp_path, "second")) == 3
    age(tmp_path, "second", days=3)
    cmd = [sys.executable, "-m", "djworker.cli.process", "--config", str(recipe), "--cleanup",
           "--intermediate_storage.max_retention_days", "2"]
    proc = subprocess.run(cmd, env=env_with(), capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert ckpt_and_data(tmp_path, "second") == [] and "ckpt/second" in proc.stdout
    assert (tmp_path / "out" / "result.jsonl").exists() and (tmp_path / "jobs" / "second" / "job_summary.json").exists()


def age(tmp: Path, job: str, days: float) -> None:
    path = tmp / "jobs" / job / "job_summary.json"
    summary = json.loads(path.read_text())
    summary["end_time"] = time.time() - days * DAY
    path.write_text(json.dumps(summary))


def test_a_stray_file_in_work_dir_is_not_a_job_and_does_not_fail_the_sweep(tmp_path):
    recipe = make_recipe(tmp_path, rows=200)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "README.txt").write_text("not a job")  # age-based retention lists work_dir at every job end
    proc = dj_process(recipe, "j")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "jobs" / "README.txt").read_text() == "not a job"
    assert len(output_rows(tmp_path / "out" / "result.jsonl")) > 0
