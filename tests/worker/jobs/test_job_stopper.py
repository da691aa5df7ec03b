"""The stopper's safety: it signals only the process that the summary's identity names."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from djworker.cli import stop as stop_cli
from djworker.jobs import process_identity
from djworker.jobs.liveness import MARKER_ENV, driver_marker
from djworker.jobs.stopper import JobStopper, catches_sigterm, stop_job

from tests.worker.jobs.jobfiles import event


def untouched(proc: psutil.Process) -> bool:
    return proc.is_running() and proc.status() not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE)


def stale_summary_naming(fake_job, proc: psutil.Process, **changes):
    """A 'running' summary whose recorded driver is `proc`'s pid, altered by `changes`."""
    job = fake_job()
    summary = job.write_summary()
    ident = {"pid": proc.pid, "pgid": os.getpgid(proc.pid), "process_start_time": proc.create_time(),
             "host": summary["process"]["host"], **changes}
    job.write_summary(process=ident)
    job.append(event("JOB_START", time.time() - 5))
    return job


@pytest.mark.parametrize("force", [False, True])
def test_a_reused_pid_is_never_signalled(fake_job, bystander, force):
    """The driver died; its pid now belongs to an unrelated process (same pid, other start time)."""
    job = stale_summary_naming(fake_job, bystander, process_start_time=bystander.create_time() - 3600)
    result = stop_job(job.job_id, force=force, timeout=1, base_dir=str(job.base_dir))
    assert result["outcome"] == "not_running" and result["reason"] == "reused"
    assert not result["success"] and result["killed"] == []
    assert "not signalled" in result["message"] and str(bystander.pid) in result["message"]
    assert untouched(bystander)
    assert not (job.job_dir / "STOP").exists()


def test_dj_stop_says_a_reused_pid_was_not_signalled(fake_job, bystander):
    job = stale_summary_naming(fake_job, bystander, process_start_time=bystander.create_time() - 3600)
    done = subprocess.run([sys.executable, "-m", "djworker.cli.stop", job.job_id, "--base-dir", str(job.base_dir),
                           "--force"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unrelated process" in done.stderr and "not signalled" in done.stderr
    assert untouched(bystander)


@pytest.mark.parametrize("force", [False, True])
def test_a_job_on_another_host_is_never_signalled(fake_job, bystander, force):
    job = stale_summary_naming(fake_job, bystander, host="another-node")
    job.job_dir.joinpath("job.lock").write_text(json.dumps(
        {"pid": bystander.pid, "host": "another-node", "heartbeat": time.time()}))
    result = JobStopper(job.job_id, str(job.base_dir)).stop_job(force=force, timeout=0.5)
    assert result["outcome"] == ("refused" if force else "requested")
    assert "another-node" in result["message"]
    assert ("cannot signal" if force else "no signal was sent") in result["message"]
    assert untouched(bystander)


def test_a_job_on_another_host_is_asked_through_the_stop_file(fake_job, bystander):
    job = stale_summary_naming(fake_job, bystander, host="another-node")
    job.job_dir.joinpath("job.lock").write_text(json.dumps(
        {"pid": bystander.pid, "host": "another-node", "heartbeat": time.time()}))
    # The remote driver honours STOP: it writes its final status.
    summary = json.loads(job.summary_path.read_text())

    def remote_driver_stops():
        deadline = time.time() + 5
        while not (job.job_dir / "STOP").exists() and time.time() < deadline:
            time.sleep(0.05)
        job.summary_path.write_text(json.dumps({**summary, "status": "stopped"}))
    threading.Thread(target=remote_driver_stops).start()
    result = stop_job(job.job_id, timeout=5, base_dir=str(job.base_dir))
    assert result["outcome"] == "stopped" and result["method"] == "stop_file"
    assert untouched(bystander)


def test_a_finished_job_is_not_running(fake_job, capsys):
    job = fake_job()
    job.write_summary(status="completed", driver="gone")
    assert stop_cli.main([job.job_id, "--base-dir", str(job.base_dir)]) == 2
    assert "not running (status: completed" in capsys.readouterr().err


def test_an_unknown_job_is_not_found(tmp_path, capsys):
    assert stop_cli.main(["nope", "--base-dir", str(tmp_path)]) == 1
    assert "--base-dir" in capsys.readouterr().err


def test_orphans_of_a_dead_driver_are_found_by_its_run_marker(fake_job, bystander):
    """The driver was killed outright; a daemon it started lives on, reparented to init."""
    job = fake_job()
    summary = job.write_summary(driver="gone")
    marker = driver_marker(job.job_id, summary["process"])
    orphan = subprocess.Popen(["sleep", "120"], env={**os.environ, MARKER_ENV: marker}, start_new_session=True)
    other = subprocess.Popen(["sleep", "120"], env={**os.environ, MARKER_ENV: marker + "0"})
    try:
        result = stop_job(job.job_id, base_dir=str(job.base_dir))
        assert result["outcome"] == "not_running" and result["killed"] == [orphan.pid]
        orphan.wait(timeout=5)  # psutil may have reaped it already
        assert not psutil.pid_exists(orphan.pid)
        assert untouched(psutil.Process(other.pid)) and untouched(bystander)
    finally:
        for proc in (orphan, other):
            proc.kill()
            proc.wait()


def test_sigterm_handlers_are_detected(bystander):
    assert catches_sigterm(bystander.pid) is False  # `sleep` would die on SIGTERM without a checkpoint
    old = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        assert catches_sigterm(os.getpid()) is True
    finally:
        signal.signal(signal.SIGTERM, old)


def test_is_job_running_checks_the_identity_not_the_pid(fake_job):
    job = fake_job()
    job.write_summary(driver="alive")
    assert JobStopper(job.job_id, str(job.base_dir)).is_job_running()
    job.write_summary(driver="reused")
    stopper = JobStopper(job.job_id, str(job.base_dir))
    assert not stopper.is_job_running()
    assert stopper.get_job_summary().process["pid"] == process_identity()["pid"]


def test_dj_stop_lists_running_jobs_with_pid_host_and_progress(fake_job, capsys):
    job = fake_job("live")
    job.write_summary(driver="alive")
    job.write_plan([100, 100])
    job.append(event("JOB_START", time.time() - 4), event("PARTITION_COMPLETE", time.time() - 2, partition_id=0))
    fake_job("stale").write_summary(driver="reused")
    assert stop_cli.main(["--list", "--json", "--base-dir", str(job.base_dir)]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["job_id"], listed["pid"], listed["progress_percentage"]) == ("live", os.getpid(), 50.0)
    assert listed["host"] and listed["start_time"] and listed["eta_seconds"] is not None
    assert stop_cli.main(["--list", "--base-dir", str(job.base_dir)]) == 0
    assert "live" in capsys.readouterr().out
