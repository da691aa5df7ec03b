"""Real jobs driven the way a user does: dj-process runs, dj-monitor watches, dj-stop stops, dj-process resumes."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import psutil

from djworker.jobs.common import JobNotFound, list_running_jobs
from djworker.jobs.monitor import JobProgressMonitor
from djworker.jobs.stopper import is_live, stop_job
from tests.support.engine import STANDARD_OPS, dj_process, env_with, event_types, events, make_recipe, \
    start_dj_process, summary, wait_exit
from tests.support.wait import wait_for

ENV = {"DJ_EXTRA_OP_MODULES": "tests.support.test_ops,tests.support.slow_ops"}
# What the driver is proposed to do at start-up (see docs/job-management.md, "Orphans"): mark its processes.
LAUNCHER = """\
import os, sys
from djworker.jobs import process_identity
from djworker.jobs.liveness import MARKER_ENV, driver_marker
from djworker.cli.process import main

if __name__ == "__main__":  # pool workers import this file as __mp_main__
    os.environ[MARKER_ENV] = driver_marker(sys.argv[1], process_identity())
    sys.exit(main(["--config", sys.argv[2], "--job_id", sys.argv[1], "--quiet"]))
"""


def slow_ops(seconds: float) -> list[dict[str, Any]]:
    slow = {"slow_mapper": {"seconds": seconds}}
    return [*STANDARD_OPS[:2], slow, *STANDARD_OPS[2:], slow]


def cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], env=env_with(ENV), capture_output=True, text=True,
                          timeout=120)


def pids_in(directory: Path, n: int) -> Optional[list[int]]:
    files = [f for f in directory.glob("*") if not f.name.endswith(".tmp")] if directory.exists() else []
    return [int(f.read_text()) for f in files] if len(files) >= n else None


def all_gone(pids: list[int]) -> bool:
    return not any(is_live(psutil.Process(pid)) for pid in pids if psutil.pid_exists(pid))


def test_monitor_stop_and_resume_give_the_output_of_an_uninterrupted_run(tmp_path):
    reference = make_recipe(tmp_path, rows=500, np=1, name="reference", process=slow_ops(0),
                            export_path=str(tmp_path / "out" / "reference.jsonl"))
    assert dj_process(reference, "reference", env=ENV).returncode == 0
    recipe = make_recipe(tmp_path, rows=500, np=1, process=slow_ops(0.6))
    base = str(tmp_path / "jobs")
    driver = start_dj_process(recipe, "slow", env=ENV)
    monitor = JobProgressMonitor("slow", base)
    wait_for(lambda: monitor.get_progress_data()["overall_progress"]["job_status"] == "running", 60, "job start",
             ignore=(JobNotFound,), process=driver, every=0.1)
    watcher = subprocess.Popen([sys.executable, "-m", "djworker.cli.monitor", "slow", "--base-dir", base, "--watch",
                                "--json", "--interval", "0.3"], env=env_with(ENV), stdout=subprocess.PIPE, text=True)

    # Running: totals from the plan, a real ETA once a partition is done.
    data = wait_for(lambda: (d := monitor.get_progress_data())["overall_progress"]["partitions"]["completed"] and d,
                    60, "a completed partition", ignore=(JobNotFound,), process=driver, every=0.1)
    o = data["overall_progress"]
    assert o["job_status"] == "running"
    assert o["partitions"]["total"] == 5 and o["samples"]["total"] == 500
    assert o["partitions"]["completed"] < 5 and o["eta_seconds"] is not None and o["eta_seconds"] > 0
    assert [(j["job_id"], j["pid"]) for j in list_running_jobs(base)] == [("slow", driver.pid)]
    tree = [p.pid for p in psutil.Process(driver.pid).children(recursive=True)]
    assert tree, "the pool's processes should be running"

    stopped = cli("djworker.cli.stop", "slow", "--base-dir", base, "--timeout", "30", "--json")
    result = json.loads(stopped.stdout)
    assert stopped.returncode == 0, result
    assert (result["outcome"], result["method"], result["remaining"]) == ("stopped", "graceful", [])
    assert wait_exit(driver, 30) == 130
    assert all_gone(tree)
    assert summary(tmp_path, "slow")["status"] == "stopped"
    assert [t for t in event_types(events(tmp_path, "slow")) if t.startswith("JOB_")] == ["JOB_START", "JOB_STOPPED"]
    assert not (tmp_path / "jobs" / "slow" / "STOP").exists()
    out, _ = watcher.communicate(timeout=30)  # the watch ends by itself
    assert watcher.returncode == 0
    assert json.loads(out.splitlines()[-1])["overall_progress"]["job_status"] == "stopped"
    after = monitor.get_progress_data()["overall_progress"]
    assert after["job_status"] == "stopped" and after["partitions"]["processing"] == 0
    done_before = after["partitions"]["completed"]
    assert 0 < done_before < 5

    resumed = dj_process(recipe, "slow", env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    later = events(tmp_path, "slow")
    later = later[event_types(later).index("JOB_RESUMED"):]
    assert event_types(later).count("PARTITION_SKIPPED") == done_before  # finished work is never redone
    assert event_types(later).count("PARTITION_START") == 5 - done_before
    assert (tmp_path / "out" / "result.jsonl").read_bytes() == (tmp_path / "out" / "reference.jsonl").read_bytes()
    final = monitor.get_progress_data()["overall_progress"]
    assert final["job_status"] == "completed" and final["partitions"]["completed"] == 5


def test_a_driver_that_does_not_stop_in_time_is_killed_with_its_whole_tree(tmp_path, bystander):
    pid_dir = tmp_path / "spawned"
    recipe = make_recipe(tmp_path, rows=200, np=2, process=[{"spawning_mapper": {"pid_dir": str(pid_dir),
                                                                                 "seconds": 120}}])
    driver = start_dj_process(recipe, "stuck", env=ENV)
    spawned = wait_for(lambda: pids_in(pid_dir, 2), 60, "both workers to start their daemons", process=driver,
                       every=0.1)
    result = stop_job("stuck", timeout=1, base_dir=str(tmp_path / "jobs"))
    assert (result["outcome"], result["method"], result["remaining"]) == ("killed", "sigkill", [])
    assert set(spawned) <= set(result["killed"]) and driver.pid in result["killed"]
    driver.wait(timeout=10)  # the stopper may have reaped it already
    assert all_gone(spawned + result["tree"])
    assert is_live(bystander)
    # The stopper records the end the killed driver could not write; the job stays resumable.
    assert summary(tmp_path, "stuck")["status"] == "stopped"
    last = events(tmp_path, "stuck")[-1]
    assert last["event_type"] == "JOB_STOPPED" and last["killed"] is True
    assert JobProgressMonitor("stuck", str(tmp_path / "jobs")).get_progress_data()["overall_progress"]["job_status"] \
        == "stopped"


def test_force_kills_at_once_even_daemons_that_left_the_tree(tmp_path, bystander):
    """The driver shares pytest's process group (no group kill is safe) and its daemons were reparented to init."""
    pid_dir = tmp_path / "spawned"
    recipe = make_recipe(tmp_path, rows=200, np=2, process=[{"spawning_mapper": {"pid_dir": str(pid_dir),
                                                                                 "seconds": 120, "detached": True}}])
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    driver = subprocess.Popen([sys.executable, str(launcher), "forced", str(recipe)], env=env_with(ENV), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    spawned = wait_for(lambda: pids_in(pid_dir, 2), 60, "both workers to start their daemons", process=driver,
                       every=0.1)
    assert all(psutil.Process(pid).ppid() != driver.pid for pid in spawned)
    t0 = time.time()
    result = stop_job("forced", force=True, base_dir=str(tmp_path / "jobs"))
    assert time.time() - t0 < 10
    assert (result["outcome"], result["method"], result["remaining"]) == ("killed", "force", [])
    assert set(spawned) <= set(result["killed"])
    driver.wait(timeout=10)
    assert all_gone([driver.pid, *spawned])
    assert is_live(bystander)  # same process group as the driver, untouched
    assert summary(tmp_path, "forced")["status"] == "stopped"
