"""Security: no secret value ever reaches what the engine writes or prints, and the stopper never
signals a process that it cannot prove belongs to the job."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from djworker.demo_data import write_jsonl
from tests.support.engine import dj_process, env_with, event_types, events_so_far, job_files, make_recipe, \
    start_dj_process
from tests.support.k8s import free_port
from tests.support.s3 import SECRET_KEY
from tests.support.wait import wait_for

JOB = "sec"


def leaks(secret: str, texts: dict[str, str]) -> list[str]:
    """The names of the texts that contain the secret."""
    return sorted(name for name, text in texts.items() if secret in text)


def files_under(*roots: Path) -> dict[str, str]:
    """Every file under the roots, read as text whatever it holds (Parquet, JSON, logs, locks)."""
    return {str(p): p.read_bytes().decode("utf-8", "replace") for root in roots if root.exists()
            for p in root.rglob("*") if p.is_file()}


def bucket_objects(bucket: str, endpoint: str) -> dict[str, str]:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    return {f"s3://{key}": fs.cat_file(key).decode("utf-8", "replace") for key in fs.find(bucket)}


def cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], env=env_with(), capture_output=True, text=True,
                          timeout=120)


@pytest.mark.s3
def test_the_s3_secret_appears_in_no_log_event_summary_status_or_output(tmp_path, s3_env, s3_bucket):
    """A job on S3 with the secret in its environment: killed once, retried once, resumed, monitored
    and stop-requested. Everything it wrote anywhere, and everything it printed, is grepped."""
    import s3fs

    assert s3_env["AWS_SECRET_ACCESS_KEY"] == SECRET_KEY
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_env["AWS_ENDPOINT_URL"]})
    local = tmp_path / "input.jsonl"
    write_jsonl(str(local), 300)
    fs.put_file(str(local), f"{s3_bucket}/in/input.jsonl")
    ops = [{"clean_links_mapper": {}},
           {"flaky_mapper": {"state_dir": str(tmp_path / "flaky"), "failures": 1, "first_ids": [100]}},
           {"text_length_filter": {"min_len": 50}}]
    recipe = make_recipe(tmp_path, rows=300, dataset_path=f"s3://{s3_bucket}/in/input.jsonl",
                         checkpoint_dir=f"s3://{s3_bucket}/ckpt", export_path=f"s3://{s3_bucket}/out/result.jsonl",
                         process=ops)
    printed: dict[str, str] = {}
    killed = dj_process(recipe, JOB, env={"DJ_FAILPOINTS": "partition_done=1"})
    assert killed.returncode == -signal.SIGKILL
    printed.update({"killed.stdout": killed.stdout, "killed.stderr": killed.stderr})
    port = free_port()
    resumed = start_dj_process(recipe, JOB, "--progress-port", str(port))
    progress = poll_progress(port, resumed)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    printed.update({"resumed.stdout": out, "resumed.stderr": err, "/progress": progress})
    for name, args in {"monitor": ("djworker.cli.monitor", JOB, "--base-dir", str(tmp_path / "jobs"), "--json",
                                   "--detailed"),
                       "stop": ("djworker.cli.stop", JOB, "--base-dir", str(tmp_path / "jobs"), "--json")}.items():
        done = cli(*args)
        printed.update({f"{name}.stdout": done.stdout, f"{name}.stderr": done.stderr})
    missing_bucket = dj_process(make_recipe(tmp_path, name="nobucket", checkpoint_dir="s3://no-such-bucket/x"), "nb")
    assert missing_bucket.returncode == 5
    printed.update({"failed.stdout": missing_bucket.stdout, "failed.stderr": missing_bucket.stderr})

    written = files_under(tmp_path / "jobs", tmp_path / "events")
    stored = bucket_objects(s3_bucket, s3_env["AWS_ENDPOINT_URL"])
    names = set(written) | set(stored)
    for expected in ("events.jsonl", "events.log", "job_summary.json", "dataset_mapping.json",
                     "final_mapping_report.json", "result.jsonl.manifest.json"):
        assert any(n.endswith(expected) for n in names), expected  # the grep covers them
    assert any("PARTITION_FAILED" in t and "injected failure" in t for t in written.values())  # a stack trace too
    assert leaks(SECRET_KEY, {**written, **stored, **printed}) == []


def poll_progress(port: int, proc: subprocess.Popen) -> str:
    """Every /progress answer while the driver runs, concatenated."""
    seen = []
    while proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress", timeout=2) as resp:
                seen.append(resp.read().decode())
        except OSError:
            pass
        time.sleep(0.1)
    assert seen, "the progress endpoint never answered"
    return "\n".join(seen)


# ---- the stopper ------------------------------------------------------------------------
@pytest.fixture
def bystander() -> Iterator[psutil.Process]:
    """An unrelated process that must come out of every test untouched."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield psutil.Process(proc.pid)
    proc.kill()
    proc.wait()


def untouched(proc: psutil.Process) -> bool:
    return proc.is_running() and proc.status() not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE)


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real job, run to completion by dj-process: its summary is what the tests below falsify."""
    tmp = tmp_path_factory.mktemp("stopper")
    assert dj_process(make_recipe(tmp, rows=100), JOB).returncode == 0
    (tmp / "summary.orig").write_bytes(job_files(tmp, JOB).summary_path.read_bytes())
    return tmp


def pretend_running(tmp: Path, identity: dict) -> dict:
    """Rewrite the finished job's (original) summary as if a driver with `identity` were still running it."""
    summary = json.loads((tmp / "summary.orig").read_text())
    summary.update(status="running", process={**summary["process"], **identity})
    job_files(tmp, JOB).summary_path.write_text(json.dumps(summary))
    return summary


def identity_of(proc: psutil.Process, **changes) -> dict:
    return {"pid": proc.pid, "pgid": os.getpgid(proc.pid), "process_start_time": proc.create_time(), **changes}


@pytest.mark.parametrize("force", [False, True])
def test_a_reused_pid_is_refused_and_the_process_is_left_alone(finished_job, bystander, force):
    """The recorded driver died and its pid now belongs to another process (other start time)."""
    pretend_running(finished_job, identity_of(bystander, process_start_time=bystander.create_time() - 600))
    args = [JOB, "--base-dir", str(finished_job / "jobs"), "--timeout", "1"] + (["--force"] if force else [])
    done = cli("djworker.cli.stop", *args)
    assert done.returncode == 2, done.stderr
    assert "now belongs to an unrelated process" in done.stderr and "not signalled" in done.stderr
    assert untouched(bystander)
    assert not os.path.exists(job_files(finished_job, JOB).paths.stop_request)


@pytest.mark.parametrize("host", ["another-node", None])
def test_a_driver_it_cannot_check_is_never_signalled(finished_job, bystander, host):
    """Recorded on another host (a pod elsewhere), or with no identity at all: nothing is signalled."""
    summary = pretend_running(finished_job, identity_of(bystander, host=host or "x"))
    if host is None:
        summary.pop("process")
        job_files(finished_job, JOB).summary_path.write_text(json.dumps(summary))
    done = cli("djworker.cli.stop", JOB, "--base-dir", str(finished_job / "jobs"), "--force", "--json")
    result = json.loads(done.stdout)
    assert result["killed"] == [] and not result["success"], result
    assert untouched(bystander)


def test_a_summary_naming_an_unrelated_live_process_exactly_is_not_enough_proof(finished_job, bystander):
    """job_summary.json is a file anyone with write access to work_dir can edit: the exact identity of
    an unrelated process in it must not get that process killed."""
    pretend_running(finished_job, identity_of(bystander))
    done = cli("djworker.cli.stop", JOB, "--base-dir", str(finished_job / "jobs"), "--force", "--timeout", "1")
    assert untouched(bystander), done.stdout + done.stderr


def test_stopping_a_real_job_spares_its_launcher_and_the_launchers_other_children(tmp_path, bystander):
    """The driver runs in its launcher's process group (no new session): the stopper kills the
    driver's own tree, never the group it shares with the launcher and its other children."""
    recipe = make_recipe(tmp_path, rows=400, process=[{"slow_mapper": {"seconds": 0.5}}])
    script = (f"import subprocess, sys, time\n"
              f"sibling = subprocess.Popen(['sleep', '300'])\n"
              f"print(sibling.pid, flush=True)\n"
              f"driver = subprocess.Popen([sys.executable, '-m', 'djworker.cli.process', '--config', {str(recipe)!r},"
              f" '--job_id', {JOB!r}, '--quiet'])\n"
              f"print(driver.pid, flush=True)\n"
              f"driver.wait(); time.sleep(300)\n")
    launcher = subprocess.Popen([sys.executable, "-c", script], env=env_with(), stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
    try:
        sibling, driver = (psutil.Process(int(launcher.stdout.readline())) for _ in range(2))
        wait_for(lambda: "PARTITION_START" in event_types(events_so_far(tmp_path, JOB)), 60, "a partition started",
                 every=0.1)
        done = cli("djworker.cli.stop", JOB, "--base-dir", str(tmp_path / "jobs"), "--force", "--json")
        result = json.loads(done.stdout)
        assert result["success"] and driver.pid in result["killed"], result
        assert launcher.pid not in result["killed"] and sibling.pid not in result["killed"]
        assert untouched(psutil.Process(launcher.pid)) and untouched(sibling) and untouched(bystander)
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
