"""The Ray executor end to end: same plan, checkpoints, events and output as the local pool;
killed workers and failing ops retried with backoff; stops and driver deaths leave no Ray
behind. Most Ray runs are a real dj-process starting its own local Ray; the last ones
connect through Ray Client to a separately started cluster head, as the operator's driver
pod connects to its RayCluster."""
from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from djworker.config import Strategy
from djworker.errors import ClusterLost, RecipeError
from djworker.executors import ray as ray_executor
from djworker.executors.ray import init_kwargs, ray_address
from djworker.plan import Partition
from djworker.run import PartitionTask
from djworker.scheduler import RetryPolicy, Scheduler, backoff_delay
from djworker.storage import StorageOptions
import tests.support.test_ops  # noqa: F401  (registers the test ops here too)
from tests.support.engine import (STANDARD_OPS, dj_process, event_types, events, events_so_far, floor_rows, make_recipe,
                                  output_rows, start_dj_process, wait_exit)
from tests.support.ray import alive, kill_pids, ray_head, ray_runs, wait_gone  # noqa: F401  (fixtures)
from tests.support.scripted import ScriptedExecutor
from tests.support.wait import wait_for

WORKER_EVENTS = {"PARTITION_START", "OP_START", "OP_COMPLETE", "OP_FAILED", "CHECKPOINT_SAVE", "CHECKPOINT_LOAD"}


def per_partition(evs: list[dict[str, Any]]) -> dict[int, list[tuple]]:
    """Each partition's story without timing or placement: what ran, in what order, on how many rows."""
    out: dict[int, list[tuple]] = defaultdict(list)
    for e in evs:
        if e.get("partition_id") is not None and e["event_type"] != "INFO":
            out[e["partition_id"]].append((e["event_type"], e.get("op_idx"), e.get("op_name"), e.get("rows_in"),
                                           e.get("rows_out"), e.get("retry_count")))
    return dict(out)


def manifests(root: Path) -> set[str]:
    return {p.name for p in root.glob("checkpoint_*.json")}


# ---- backoff (pure) -------------------------------------------------------------
@pytest.mark.parametrize("kind, expected", [
    ("exponential", [0.5, 1.0, 2.0, 4.0, 8.0]),
    ("linear", [0.5, 1.0, 1.5, 2.0, 2.5]),
    ("fixed", [0.5, 0.5, 0.5, 0.5, 0.5]),
])
def test_backoff_delay_grows_by_kind_without_jitter(kind, expected):
    rng = random.Random(0)
    assert [backoff_delay(kind, a, 0.5, 60, 0.0, rng) for a in range(1, 6)] == expected


@pytest.mark.parametrize("kind", ["exponential", "linear", "fixed"])
def test_backoff_delay_is_capped_and_jitter_stays_within_bounds(kind):
    rng = random.Random(7)
    assert backoff_delay(kind, 40, 3.0, 5.0, 0.0, rng) == (3.0 if kind == "fixed" else 5.0)
    raw = {"exponential": 4.0, "linear": 3.0, "fixed": 1.0}[kind]
    delays = [backoff_delay(kind, 3, 1.0, 60, 0.25, rng) for _ in range(2000)]
    assert all(0.75 * raw <= d <= 1.25 * raw for d in delays)
    assert min(delays) < 0.8 * raw and max(delays) > 1.2 * raw  # jitter really spreads retries
    capped = [backoff_delay(kind, 30, 1.0, 2.0, 0.5, rng) for _ in range(500)]
    assert all(0 <= d <= 2.0 * 1.5 for d in capped)


def scripted_tasks(n: int) -> list[PartitionTask]:
    return [PartitionTask(job_id="j", partition=Partition(partition_id=i, path="", sample_count=10, bytes=1,
                                                          checksum=f"{i:020d}", source={}),
                          ops=[], strategy=Strategy.every_op, n_ops=1, op_names=[], checkpoint_root="", results_root="",
                          intermediate_root=None, storage_options=StorageOptions()) for i in range(n)]


def test_scheduler_retries_until_spent_then_fails_only_that_partition():
    emitted: list[tuple[str, dict, float]] = []
    boom = RuntimeError("boom")
    script = {1: [boom, boom, None], 2: [boom, boom, boom, boom]}
    policy = RetryPolicy(max_retries=2, kind="fixed", base_s=0.05, cap_s=1, jitter=0.0)
    sched = Scheduler(ScriptedExecutor(script, rows_out=10), 2, policy, lambda kind, **f: emitted.append((kind, f, time.time())),
                      lambda: False)
    failed = sched.run(scripted_tasks(4))
    assert [pid for pid, _ in failed] == [2] and "boom" in failed[0][1]
    fails = [(f["partition_id"], f["retry_count"], f["final"]) for k, f, _ in emitted if k == "PARTITION_FAILED"]
    assert sorted(fails) == [(1, 0, False), (1, 1, False), (2, 0, False), (2, 1, False), (2, 2, True)]
    done = {f["partition_id"]: f["retry_count"] for k, f, _ in emitted if k == "PARTITION_COMPLETE"}
    assert done == {0: 0, 1: 2, 3: 0}  # the others ran to completion before the job is failed
    times = [t for k, f, t in emitted if k == "PARTITION_FAILED" and f["partition_id"] == 2]
    assert all(b - a >= 0.05 for a, b in zip(times, times[1:]))  # fixed backoff between attempts


def test_a_non_retryable_error_fails_the_partition_at_once():
    from djworker.storage import StorageAccessDenied

    emitted: list[tuple[str, dict]] = []
    sched = Scheduler(ScriptedExecutor({0: [StorageAccessDenied("denied")]}, rows_out=10), 1, RetryPolicy(max_retries=5),
                      lambda kind, **f: emitted.append((kind, f)), lambda: False)
    assert [pid for pid, _ in sched.run(scripted_tasks(1))] == [0]
    assert [(f["retry_count"], f["final"]) for k, f in emitted if k == "PARTITION_FAILED"] == [(0, True)]


# ---- Ray settings (pure) ----------------------------------------------------------
def test_ray_address_comes_from_the_recipe_then_ray_address_env(monkeypatch):
    recipe = SimpleNamespace(ray_address=None, np=3)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_address(recipe) == "local"
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert ray_address(recipe) == "ray://head:10001"
    assert ray_address(SimpleNamespace(ray_address="ray://other:10001")) == "ray://other:10001"


def test_a_ray_client_disconnect_that_never_returns_does_not_hold_the_driver(monkeypatch):
    """Ray Client's disconnect joins its RPC thread without a timeout; the driver waits a
    bounded time, then drops Ray's exit hook (which would wait the same way) and goes on."""
    unblock, started = threading.Event(), threading.Event()
    fake = SimpleNamespace(shutdown=lambda: (started.set(), unblock.wait(60)))
    unregistered: list[Any] = []
    monkeypatch.setattr(ray_executor.atexit, "unregister", unregistered.append)
    began = time.monotonic()
    ray_executor._disconnect_client(fake, 0.5)
    assert started.is_set() and time.monotonic() - began < 5
    assert unregistered == [fake.shutdown]
    unblock.set()
    ray_executor._disconnect_client(SimpleNamespace(shutdown=lambda: None), 5)  # a prompt one leaves the hook
    assert unregistered == [fake.shutdown]


def heartbeat(remote: bool, silent_s: float, grace_s: float = 1.0) -> ray_executor.RayExecutor:
    """A RayExecutor's heartbeat state alone, with no Ray behind it."""
    ex = object.__new__(ray_executor.RayExecutor)
    ex.address, ex.remote, ex.grace_s = ("ray://head:10001" if remote else "local"), remote, grace_s
    ex._last_contact, ex._contact_error = time.monotonic() - silent_s, "ConnectionError: lost"
    return ex


def test_a_silent_remote_head_is_a_lost_cluster_only_past_the_grace_and_a_local_ray_never():
    heartbeat(True, silent_s=0.5).check_alive()
    heartbeat(False, silent_s=3600).check_alive()
    with pytest.raises(ClusterLost, match=r"lost the Ray cluster at 'ray://head:10001'.*ConnectionError: lost.*"
                                          r"resume this job with the same job id") as err:
        heartbeat(True, silent_s=2).check_alive()
    assert err.value.exit_code == 7 and err.value.retryable
    assert ray_executor.CLUSTER_GRACE_S > 30  # past Ray Client's own reconnect grace


def test_the_cluster_grace_comes_from_the_env_and_a_bad_value_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DJ_RAY_CLUSTER_GRACE_S", raising=False)
    assert ray_executor.cluster_grace_s() == ray_executor.CLUSTER_GRACE_S
    monkeypatch.setenv("DJ_RAY_CLUSTER_GRACE_S", "90")
    assert ray_executor.cluster_grace_s() == 90.0
    for bad in ("soon", "0", "-5", "nan"):
        monkeypatch.setenv("DJ_RAY_CLUSTER_GRACE_S", bad)
        with pytest.raises(RecipeError, match=r"DJ_RAY_CLUSTER_GRACE_S must be a number of seconds above 0"):
            ray_executor.cluster_grace_s()


def test_a_task_failure_on_a_remote_cluster_waits_for_the_head_then_gives_up_or_goes_on():
    ex = heartbeat(True, silent_s=0, grace_s=1.0)
    began = time.monotonic()
    with pytest.raises(ClusterLost):  # the head never answers again: ClusterLost after the grace
        ex.on_failure(RuntimeError("task lost"))
    assert 0.9 < time.monotonic() - began < 5
    ex = heartbeat(True, silent_s=0, grace_s=30.0)
    threading.Timer(0.3, lambda: setattr(ex, "_last_contact", time.monotonic())).start()
    began = time.monotonic()
    ex.on_failure(RuntimeError("task lost"))  # the head answered: the retry may go ahead
    assert 0.2 < time.monotonic() - began < 5
    heartbeat(False, silent_s=3600).on_failure(RuntimeError("op failed"))  # a local Ray: no wait


def test_a_local_ray_is_sized_by_np_and_a_remote_one_gets_settings_but_never_secrets(monkeypatch):
    recipe = SimpleNamespace(ray_address=None, np=3)
    monkeypatch.setenv("DJ_RAY_TEMP_DIR", "/tmp/djr-x")
    local = init_kwargs(recipe, "local")
    assert local["num_cpus"] == 3 and local["_temp_dir"] == "/tmp/djr-x" and "runtime_env" not in local
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("DJ_EXTRA_OP_MODULES", "my.ops")
    remote = init_kwargs(recipe, "ray://head:10001")
    assert "num_cpus" not in remote and "_temp_dir" not in remote
    env = remote["runtime_env"]["env_vars"]
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000" and env["DJ_EXTRA_OP_MODULES"] == "my.ops"
    assert "s3cr3t" not in repr(remote)


# ---- Ray runs -----------------------------------------------------------------
def test_ray_and_local_executors_give_identical_output_checkpoints_and_events(tmp_path, ray_runs):
    ops = [*STANDARD_OPS, {"slow_mapper": {"seconds": 0.5}}]  # a slow last op: op events visibly precede the end
    (tmp_path / "local").mkdir()
    (tmp_path / "ray").mkdir()
    local = make_recipe(tmp_path / "local", rows=600, process=ops)
    assert dj_process(local, "j").returncode == 0
    recipe = make_recipe(tmp_path / "ray", rows=600, process=ops, executor_type="ray")
    run = ray_runs(recipe, "j")

    def op_events_ahead_of_completion(evs: list[dict]) -> bool:
        done = {e["partition_id"] for e in evs if e["event_type"] == "PARTITION_COMPLETE"}
        return any(e["event_type"] == "OP_COMPLETE" and e["op_idx"] == 4 and e["partition_id"] not in done for e in evs)

    run.wait_for(op_events_ahead_of_completion)  # the driver logs op events as they happen
    assert run.finish() == 0, run.output
    ray_evs, local_evs = events(tmp_path / "ray", "j"), events(tmp_path / "local", "j")

    assert output_rows(tmp_path / "ray/out/result.jsonl") == output_rows(tmp_path / "local/out/result.jsonl")
    assert output_rows(tmp_path / "ray/out/result.jsonl") == floor_rows(tmp_path / "ray/input.jsonl", recipe)
    assert manifests(tmp_path / "ray/ckpt/j") == manifests(tmp_path / "local/ckpt/j") != set()
    assert manifests(tmp_path / "ray/jobs/j/results") == manifests(tmp_path / "local/jobs/j/results")
    assert per_partition(ray_evs) == per_partition(local_evs)
    assert sorted(event_types(ray_evs)) == sorted(event_types(local_evs))
    driver = ray_evs[0]["pid"]
    for pid, story in per_partition(ray_evs).items():
        assert story[-1][0] == "PARTITION_COMPLETE"  # after every event the partition's task sent
    worker_pids = {e["pid"] for e in ray_evs if e["event_type"] in WORKER_EVENTS}
    assert driver not in worker_pids and worker_pids <= set(run.ray_pids)  # written by the driver, stamped by Ray workers
    assert all(e["duration_s"] >= 0 and e["rows_out"] is not None for e in ray_evs if e["event_type"] == "OP_COMPLETE")
    assert {"raylet", "gcs_server"} <= set(run.ray_pids.values())
    assert wait_gone(run.ray_pids, 15) == {}, "the driver's local Ray outlived it"


def test_killed_ray_worker_and_failing_op_are_retried_with_data_on_s3(tmp_path, ray_runs, s3_bucket):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]})
    from djworker.demo_data import write_jsonl

    write_jsonl(str(tmp_path / "input.jsonl"), 400)
    fs.put(str(tmp_path / "input.jsonl"), f"{s3_bucket}/in/input.jsonl")
    pids = tmp_path / "pids"
    ops = [{"flaky_mapper": {"state_dir": str(tmp_path / "flaky"), "failures": 1, "first_ids": [0]}},
           {"pid_mapper": {"pid_dir": str(pids), "seconds": 60, "first_ids": [200]}},
           {"clean_links_mapper": {}}, {"text_length_filter": {"min_len": 100, "max_len": 600}}]
    bucket = f"s3://{s3_bucket}"
    recipe = make_recipe(tmp_path, rows=400, process=ops, executor_type="ray_partitioned",
                         dataset_path=f"{bucket}/in/input.jsonl",
                         checkpoint_dir=f"{bucket}/ckpt", export_path=f"{bucket}/out/result.jsonl",
                         retry={"max_retries": 2, "retry_backoff": "linear", "base_delay_s": 1.0, "max_delay_s": 5.0,
                                "jitter": 0.25})
    run = ray_runs(recipe, "k")
    run.wait_for(lambda _: (pids / "rows-from-200.0").exists(), what="the worker of rows from 200 to start")
    victim = int((pids / "rows-from-200.0").read_text())
    assert victim in run.ray_pids and victim != run.proc.pid  # a Ray worker, not the driver
    os.kill(victim, signal.SIGKILL)
    assert run.finish() == 0, run.output

    evs = events(tmp_path, "k")
    failed = {e["partition_id"]: e for e in evs if e["event_type"] == "PARTITION_FAILED"}
    assert sorted(failed) == [0, 2] and all(e["retry_count"] == 0 and not e["final"] for e in failed.values())
    assert failed[0]["error"].startswith("RuntimeError: flaky_mapper: injected failure")  # the op's error, not Ray's
    assert "flaky_mapper" in failed[0]["stack_trace"]
    completed = {e["partition_id"]: e["retry_count"] for e in evs if e["event_type"] == "PARTITION_COMPLETE"}
    assert completed == {0: 1, 1: 0, 2: 1, 3: 0}
    retry_start = next(e for e in evs if e["event_type"] == "PARTITION_START" and e["partition_id"] == 0
                       and e["retry_count"] == 1)
    assert 0.75 <= failed[0]["retry_in_s"] <= 1.25  # linear backoff, 1 s base, 25% jitter
    assert retry_start["timestamp"] > failed[0]["timestamp"]
    with fs.open(f"{s3_bucket}/out/result.jsonl", "rb") as fh:
        got = [orjson.loads(line) for line in fh.read().splitlines() if line]
    assert got == floor_rows(tmp_path / "input.jsonl", recipe)
    assert fs.find(f"{s3_bucket}/ckpt/k/results")  # workers wrote results straight to the bucket
    assert not (tmp_path / "jobs" / "k" / "partitions").exists()  # and read their input slices from it


def test_sigterm_stops_ray_job_without_orphans_and_local_executor_resumes_it(tmp_path, ray_runs):
    ops = [{"clean_links_mapper": {}}, {"slow_mapper": {"seconds": 1.0}}, {"text_length_filter": {"min_len": 100}}]
    recipe = make_recipe(tmp_path, rows=600, process=ops, executor_type="ray")
    run = ray_runs(recipe, "st")
    run.wait_for(lambda evs: "CHECKPOINT_SAVE" in event_types(evs), what="a checkpoint saved")
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.finish() == 130, run.output
    evs = events(tmp_path, "st")
    assert event_types(evs)[-1] == "JOB_STOPPED"
    assert any(e["event_type"] == "CHECKPOINT_SAVE" and e.get("message") == "stop requested" for e in evs)
    assert wait_gone(run.ray_pids, 15) == {}, "a stopped driver left Ray processes behind"
    assert not (tmp_path / "out" / "result.jsonl").exists()

    proc = dj_process(recipe, "st", "--executor_type", "default")
    assert proc.returncode == 0, proc.stderr
    after = events(tmp_path, "st")[event_types(events(tmp_path, "st")).index("JOB_RESUMED"):]
    assert {"CHECKPOINT_LOAD"} & set(event_types(after)) or "PARTITION_SKIPPED" in event_types(after)
    assert output_rows(tmp_path / "out" / "result.jsonl") == floor_rows(tmp_path / "input.jsonl", recipe)


def test_sigkilled_driver_takes_ray_core_along_and_leftovers_share_its_process_group(tmp_path, ray_runs):
    """Ray fate-shares raylet and gcs_server with the driver (PR_SET_PDEATHSIG); its workers
    exit with the raylet. Ray's agents can outlive a SIGKILLed driver for minutes, but they
    stay in the driver's process group, which is what dj-stop kills."""
    recipe = make_recipe(tmp_path, rows=200, process=[{"slow_mapper": {"seconds": 30}}], executor_type="ray")
    run = ray_runs(recipe, "sk")
    run.wait_for(lambda evs: "OP_START" in event_types(evs), what="an op started")
    group = os.getpgid(run.proc.pid)
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait()
    core = {pid for pid, name in run.ray_pids.items() if "Agent" not in name}
    assert {"raylet", "gcs_server"} <= {run.ray_pids[pid] for pid in core}
    assert wait_gone(core, 30) == {}
    leftovers = alive(run.ray_pids)
    try:
        for pid in leftovers:
            assert os.getpgid(pid) == group, (pid, leftovers[pid])
    finally:
        kill_pids(leftovers)


# ---- a remote cluster, through Ray Client ------------------------------------------------
def test_a_job_runs_on_a_remote_cluster_through_ray_client_and_leaves_it_running(tmp_path, ray_head):
    recipe = make_recipe(tmp_path, rows=400, executor_type="ray", ray_address=ray_head.address)
    proc = start_dj_process(recipe, "rc", env=ray_head.driver_env)
    cluster: set[int] = set()
    while proc.poll() is None:  # the job's workers exit with it: note them while it runs
        cluster |= ray_head.processes()
        time.sleep(0.05)
    assert wait_exit(proc, 180) == 0, proc.communicate()[1][-3000:]
    assert output_rows(tmp_path / "out" / "result.jsonl") == floor_rows(tmp_path / "input.jsonl", recipe)
    evs = events(tmp_path, "rc")
    assert event_types(evs).count("PARTITION_COMPLETE") == 4
    ran_on = {e["pid"] for e in evs if e["event_type"] == "OP_COMPLETE"}
    assert ran_on and ran_on <= cluster and proc.pid not in ran_on  # in the cluster's workers, not the driver
    assert ray_head.proc.poll() is None  # a driver never tears down a cluster it does not own


def test_a_stopped_remote_job_resumes_on_the_cluster_to_identical_output(tmp_path, ray_head):
    ops = [{"clean_links_mapper": {}}, {"slow_mapper": {"seconds": 0.5}}, {"text_length_filter": {"min_len": 100}}]
    recipe = make_recipe(tmp_path, rows=800, process=ops, executor_type="ray", ray_address=ray_head.address)
    proc = start_dj_process(recipe, "rs", env=ray_head.driver_env)
    wait_for(lambda: "PARTITION_COMPLETE" in event_types(events_so_far(tmp_path, "rs")), 120, "a completed partition",
             every=0.1, process=proc)
    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc, 120) == 130
    stopped = events(tmp_path, "rs")
    assert event_types(stopped)[-1] == "JOB_STOPPED"
    done_before = {e["partition_id"] for e in stopped if e["event_type"] == "PARTITION_COMPLETE"}
    resumed = dj_process(recipe, "rs", env=ray_head.driver_env)
    assert resumed.returncode == 0, resumed.stderr
    after = events(tmp_path, "rs")[len(stopped):]
    assert {e["partition_id"] for e in after if e["event_type"] == "PARTITION_SKIPPED"} == done_before
    assert not {e["partition_id"] for e in after if e["event_type"] == "OP_START"} & done_before
    assert output_rows(tmp_path / "out" / "result.jsonl") == floor_rows(tmp_path / "input.jsonl", recipe)
    assert ray_head.proc.poll() is None
