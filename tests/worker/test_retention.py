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
from djworker.jobs import JobPaths, JobSummary, process_identity
from djworker.retention import apply_at_end, cleanup_old_jobs, is_expired, should_clean
from djworker.storage import Storage
from tests.support.engine import REPO, dj_process, env_with, job_files, make_recipe, output_rows

DAY = 86400.0


# ---- core -------------------------------------------------------------------------
@pytest.mark.parametrize("policy, on_success, succeeded, clean", [
    ("keep_all", False, True, False), ("keep_all", False, False, False), ("keep_all", True, True, True),
    ("keep_failed_only", False, True, True), ("keep_failed_only", False, False, False),
    ("cleanup_all", False, True, True), ("cleanup_all", False, False, True), ("cleanup_all", True, False, True),
])
def test_should_clean_follows_policy_and_cleanup_on_success(policy, on_success, succeeded, clean):
    assert should_clean(policy, on_success, succeeded) is clean


def summary_of(**fields) -> JobSummary:
    return JobSummary(**{"status": "completed", **fields})


@pytest.mark.parametrize("fields, default_days, expired", [
    ({"end_time": 0.0, "retention": {"retention_policy": "keep_failed_only", "max_retention_days": 7}}, None, True),
    ({"end_time": 6 * DAY, "retention": {"retention_policy": "keep_failed_only", "max_retention_days": 7}}, None, False),
    ({"end_time": 0.0, "retention": {"retention_policy": "keep_failed_only", "max_retention_days": None}}, 1, False),
    ({"end_time": 0.0, "retention": {"retention_policy": "keep_all", "max_retention_days": 7}}, 1, False),  # its own keep_all
    ({"end_time": 0.0, "status": "failed", "retention": {"retention_policy": "keep_failed_only",
                                                         "max_retention_days": 0}}, None, True),
    ({"end_time": 0.0, "status": "stopped", "retention": {"retention_policy": "cleanup_all",
                                                          "max_retention_days": 0}}, 0, False),  # a pause
    ({"status": "running", "start_time": 0.0}, 0, False),   # maybe alive on another host: never touched
    ({"end_time": 0.0}, 7, True),                          # an older summary: the caller's days stand in
    ({"end_time": 0.0}, None, False),
    ({}, 7, False),                                        # no times recorded: keep
])
def test_is_expired_honours_each_jobs_own_settings_and_status(fields, default_days, expired):
    assert is_expired(summary_of(**fields), now=8 * DAY, default_days=default_days) is expired


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
    removed = apply_at_end(Storage(), paths, recipe, status)
    assert (intermediate_left(paths) == []) is cleaned and bool(removed) is cleaned
    assert os.path.exists(paths.mapping) is not cleaned  # the plan goes with its partitions: a rerun plans again
    assert kept_records(paths)


def test_cleanup_expires_finished_jobs_by_their_own_settings_wherever_their_summary_put_it(tmp_path):
    recipe = fake_recipe(tmp_path)
    now = time.time()
    expiring = {"retention": {"retention_policy": "keep_failed_only", "max_retention_days": 7}}
    old = fake_job(tmp_path, recipe, "old", status="failed", end_time=now - 10 * DAY, **expiring)
    recent = fake_job(tmp_path, recipe, "recent", status="failed", end_time=now - 1 * DAY, **expiring)
    keep_all = fake_job(tmp_path, recipe, "keep_all", end_time=now - 10 * DAY,
                        retention={"retention_policy": "keep_all", "max_retention_days": 7})
    forever = fake_job(tmp_path, recipe, "forever", end_time=now - 10 * DAY,
                       retention={"retention_policy": "keep_failed_only", "max_retention_days": None})
    stopped = fake_job(tmp_path, recipe, "stopped", status="stopped", end_time=now - 10 * DAY, **expiring)
    elsewhere = fake_job(tmp_path, recipe, "elsewhere", status="running", end_time=None, run_start_time=now - 9 * DAY,
                         process={"pid": 999999, "host": "another-node", "process_start_time": 0}, **expiring)
    live = fake_job(tmp_path, recipe, "live", status="running", end_time=None, run_start_time=now - 9 * DAY,
                    process=process_identity(), **expiring)
    cleanup_old_jobs(Storage(), recipe.work_dir, now=now, default_days=1)
    assert intermediate_left(old) == [] and not os.path.exists(old.mapping)
    for kept in (recent, keep_all, forever, stopped, elsewhere, live):
        assert len(intermediate_left(kept)) == 6, kept.job_id
        assert os.path.exists(kept.mapping)
    assert all(kept_records(p) for p in (old, recent, keep_all, forever, stopped, elsewhere, live))


# ---- end to end -----------------------------------------------------------------------
def ckpt_and_data(tmp: Path, job: str) -> list[Path]:
    paths = job_files(tmp, job).paths
    return [Path(p) for p in (paths.checkpoint_root, paths.partitions, paths.results) if os.path.exists(p)]


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
    assert job_files(tmp_path, "kf").events_file.exists()
    (tmp_path / "out" / "result.jsonl").unlink()
    assert dj_process(recipe, "kf").returncode == 0  # a cleaned, completed job id runs again from scratch
    assert len(output_rows(tmp_path / "out" / "result.jsonl")) == 300


def test_a_jobs_end_never_touches_other_jobs_and_cleanup_honours_each_jobs_settings(tmp_path):
    keep = make_recipe(tmp_path, rows=200, name="keep")  # keep_all, max_retention_days 7: the defaults
    poison = tmp_path / "poison"
    poison.touch()
    failing = make_recipe(tmp_path, rows=200, name="failing", retry={"max_retries": 0},
                          process=[{"flaky_mapper": {"state_dir": str(tmp_path / "fl"), "poison_file": str(poison),
                                                     "first_ids": [100]}}, {"clean_links_mapper": {}}],
                          intermediate_storage={"retention_policy": "keep_failed_only", "max_retention_days": 2})
    assert dj_process(keep, "first").returncode == 0
    assert dj_process(failing, "failed").returncode == 6
    age(tmp_path, "first", days=30)
    age(tmp_path, "failed", days=3)
    assert dj_process(keep, "second").returncode == 0  # its end touches only its own data
    assert len(ckpt_and_data(tmp_path, "first")) == 3 and ckpt_and_data(tmp_path, "failed") != []
    cmd = [sys.executable, "-m", "djworker.cli.process", "--config", str(keep), "--cleanup",
           "--intermediate_storage.max_retention_days", "0"]
    proc = subprocess.run(cmd, env=env_with(), capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert ckpt_and_data(tmp_path, "failed") == [] and "ckpt/failed" in proc.stdout  # its own 2 days are past
    assert len(ckpt_and_data(tmp_path, "first")) == 3 and len(ckpt_and_data(tmp_path, "second")) == 3  # keep_all
    assert (tmp_path / "out" / "result.jsonl").exists() and job_files(tmp_path, "failed").summary_path.exists()


def age(tmp: Path, job: str, days: float) -> None:
    path = job_files(tmp, job).summary_path
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
