"""Object storage end to end: dataset, checkpoints and export on a real S3 HTTP endpoint (moto
on loopback) reached through s3fs exactly as a user's bucket is; the event log stays local.

Most tests use the session's moto server and a fresh bucket. Tests that need an endpoint
that refuses credentials, or one that dies mid-run, start a private moto server of their own."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import orjson
import pyarrow as pa
import pytest

from djworker.checkpoint import Checkpoints
from djworker.demo_data import write_jsonl
from djworker.storage import Storage
import tests.support.test_ops  # noqa: F401  (registers the test ops here too)
from tests.support.engine import dj_process, event_types, events, events_so_far, floor_rows, job_files, make_recipe, \
    start_dj_process, summary
from tests.support.s3 import SECRET_KEY
from tests.support.wait import wait_for

pytestmark = pytest.mark.s3


def s3(endpoint: str) -> Any:
    import s3fs

    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)


def s3_rows(fs: Any, key: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in fs.cat_file(key).splitlines() if line]


def upload_input(tmp: Path, fs: Any, bucket: str, rows: int = 600) -> str:
    write_jsonl(str(tmp / "input.jsonl"), rows)
    fs.put(str(tmp / "input.jsonl"), f"{bucket}/in/input.jsonl")
    return f"s3://{bucket}/in/input.jsonl"


@pytest.fixture
def private_s3() -> Iterator[Any]:
    """Start moto servers of this test's own (killable, or refusing every key) on loopback."""
    servers: list[subprocess.Popen] = []

    def start(**env: str) -> tuple[str, subprocess.Popen]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers.append(proc)
        endpoint = f"http://127.0.0.1:{port}"
        wait_for(lambda: urllib.request.urlopen(endpoint + "/moto-api/", timeout=1), 30, "a private moto server",
                 every=0.1, ignore=(OSError,), process=proc)
        return endpoint, proc

    yield start
    for proc in servers:
        proc.kill()
        proc.wait()


def test_kill_mid_checkpoint_then_resume_on_s3_gives_identical_output(tmp_path, s3_bucket, s3_endpoint):
    fs = s3(s3_endpoint)
    dataset = upload_input(tmp_path, fs, s3_bucket)
    recipe = make_recipe(tmp_path, dataset_path=dataset, checkpoint_dir=f"s3://{s3_bucket}/ckpt",
                         export_path=f"s3://{s3_bucket}/out/result.jsonl")
    killed = dj_process(recipe, "s3k", env={"DJ_FAILPOINTS": "checkpoint_mid_write=3"})
    assert killed.returncode == -9
    root = f"{s3_bucket}/ckpt/s3k"
    names = [p.rsplit("/", 1)[1] for p in fs.find(root, maxdepth=1)]
    manifested = {n[len("checkpoint_"):-len(".json")] for n in names if n.startswith("checkpoint_")}
    torn = {n[: -len(".parquet")] for n in names if n.endswith(".parquet")} - manifested
    assert torn, "the kill landed between a data object and its manifest"
    assert not fs.exists(f"{s3_bucket}/out/result.jsonl")
    fs.pipe_file(f"{root}/partitions/partition_000001.parquet.tmp-0123abcd", b"half")  # what a killed writer leaves
    fs.pipe_file(f"{root}/notes.tmp-keep", b"not ours")

    resumed = dj_process(recipe, "s3k")
    assert resumed.returncode == 0, resumed.stderr
    [cleaned] = [e for e in events(tmp_path, "s3k") if "temp files" in e.get("message", "")]
    assert cleaned["removed"] == [f"s3://{root}/partitions/partition_000001.parquet.tmp-0123abcd"]
    assert not fs.exists(f"{root}/partitions/partition_000001.parquet.tmp-0123abcd") and fs.exists(f"{root}/notes.tmp-keep")
    assert s3_rows(fs, f"{s3_bucket}/out/result.jsonl") == floor_rows(tmp_path / "input.jsonl", recipe)
    evs = events(tmp_path, "s3k")
    after = evs[event_types(evs).index("JOB_RESUMED"):]
    loaded = {e["checkpoint_path"] for e in after if e["event_type"] == "CHECKPOINT_LOAD"}
    assert loaded and not any(key in path for key in torn for path in loaded)  # no manifest: it never existed
    saved = {e["checkpoint_path"].rsplit("/checkpoint_", 1)[1][:-5] for e in after if e["event_type"] == "CHECKPOINT_SAVE"}
    assert torn <= saved  # recomputed and written whole this time
    # the event log stays on the local path; job metadata beside it; data in the bucket
    assert job_files(tmp_path, "s3k").events_file.exists()
    assert not [p for p in fs.find(s3_bucket) if "event" in p.rsplit("/", 1)[1]]
    assert fs.find(f"{root}/partitions") and not (tmp_path / "jobs" / "s3k" / "partitions").exists()
    assert summary(tmp_path, "s3k")["status"] == "completed"


def test_a_local_export_streams_results_read_from_s3_and_resumes_after_a_kill(tmp_path, s3_bucket, s3_endpoint):
    """Results live beside the checkpoints in the bucket; the local export appends them as they
    finish (read back from S3 by the export thread) and a kill mid-run loses nothing."""
    fs = s3(s3_endpoint)
    recipe = make_recipe(tmp_path, dataset_path=upload_input(tmp_path, fs, s3_bucket),
                         checkpoint_dir=f"s3://{s3_bucket}/ckpt")
    assert dj_process(recipe, "sx", env={"DJ_FAILPOINTS": "partition_done=4"}).returncode == -9
    out = tmp_path / "out" / "result.jsonl"
    assert not out.exists() and Path(f"{out}.partial-sx").exists()
    resumed = dj_process(recipe, "sx")
    assert resumed.returncode == 0, resumed.stderr
    assert [orjson.loads(line) for line in out.read_bytes().splitlines()] == floor_rows(tmp_path / "input.jsonl", recipe)
    assert fs.find(f"{s3_bucket}/ckpt/sx/results") and not Path(f"{out}.partial-sx").exists()


def test_checkpoint_on_s3_exists_only_with_a_valid_manifest(s3_bucket):
    storage = Storage()
    store = Checkpoints(storage, f"s3://{s3_bucket}/ck", "parquet", "zstd")
    table = pa.table({"text": ["a", "b", "c"]})
    storage.put_bytes(store.data_path("partition_000000_op001_x_y"), b"PAR1 half a file")  # data, no manifest
    assert store.keys_for(0) == set()
    store.write("partition_000000_op002_x_z", table, 0, 2, ["a", "b"])
    assert store.keys_for(0) == {"partition_000000_op002_x_z"}
    assert store.load("partition_000000_op002_x_z")[0].to_pylist() == table.to_pylist()
    storage.put_bytes(store.data_path("partition_000000_op002_x_z"), b"replaced behind the manifest's back")
    loaded, problem = store.load("partition_000000_op002_x_z")
    assert loaded is None and "hash" in problem


def test_a_resuming_partition_lists_only_its_own_checkpoints(s3_bucket):
    """Each resumed partition lists its checkpoints: with a server-side prefix that is one short
    listing, not pages of every partition's objects (O(partitions^2) requests over a job)."""
    storage = Storage()
    store = Checkpoints(storage, f"s3://{s3_bucket}/ck", "parquet", "zstd")
    for pid in range(3):
        for upto in (1, 2):
            store.write(f"partition_{pid:06d}_op00{upto}_x_y", pa.table({"text": ["a"]}), pid, upto, ["a", "b"])
    fs = storage.fs(store.root)
    requests: list[dict] = []
    fs.s3.meta.events.register("before-parameter-build.s3.ListObjectsV2", lambda params, **_: requests.append(params))
    assert store.keys_for(1) == {"partition_000001_op001_x_y", "partition_000001_op002_x_y"}
    assert requests and all(r["Prefix"] == "ck/checkpoint_partition_000001_" for r in requests)
    assert storage.listdir(store.root, "checkpoint_partition_000009_") == []


def fails_on_a_missing_bucket(tmp_path, s3_endpoint, job: str, **where: str):
    """Runs a recipe whose `where` URIs ({bucket} filled in) point at a bucket that does not exist;
    asserts the clear failure and returns (fs, bucket, recipe)."""
    fs = s3(s3_endpoint)
    bucket = f"dj-missing-{os.urandom(4).hex()}"
    recipe = make_recipe(tmp_path, rows=300, **{k: v.format(bucket=bucket) for k, v in where.items()})
    proc = dj_process(recipe, job)
    assert proc.returncode == 5
    assert f"bucket '{bucket}' does not exist" in proc.stderr and "create it" in proc.stderr
    return fs, bucket, recipe


def test_missing_bucket_fails_fast_naming_it_and_loses_nothing(tmp_path, s3_env, s3_endpoint):
    fs, bucket, recipe = fails_on_a_missing_bucket(tmp_path, s3_endpoint, "mb", checkpoint_dir="s3://{bucket}/ckpt")
    assert not fs.exists(bucket)  # nothing was created on the user's behalf
    assert not (tmp_path / "jobs" / "mb" / "partitions").exists()  # failed before any work
    assert event_types(events(tmp_path, "mb"))[-1] == "JOB_FAILED"
    assert summary(tmp_path, "mb")["exit_code"] == 5
    fs.mkdir(bucket)  # the user follows the message; the same command now runs the job
    rerun = dj_process(recipe, "mb")
    assert rerun.returncode == 0, rerun.stderr
    assert len(fs.find(f"{bucket}/ckpt/mb")) > 0


def test_export_to_a_missing_bucket_fails_clearly_and_a_rerun_redoes_no_partition(tmp_path, s3_env, s3_endpoint):
    fs, bucket, recipe = fails_on_a_missing_bucket(tmp_path, s3_endpoint, "xb",
                                                   export_path="s3://{bucket}/out/result.jsonl")
    done_before = {e["partition_id"] for e in events(tmp_path, "xb") if e["event_type"] == "PARTITION_COMPLETE"}
    fs.mkdir(bucket)
    assert dj_process(recipe, "xb").returncode == 0
    evs = events(tmp_path, "xb")
    after = evs[event_types(evs).index("JOB_RESUMED"):]
    assert {e["partition_id"] for e in after if e["event_type"] == "PARTITION_SKIPPED"} == done_before
    assert not {e["partition_id"] for e in after if e["event_type"] == "OP_START"} & done_before
    assert s3_rows(fs, f"{bucket}/out/result.jsonl") == floor_rows(tmp_path / "input.jsonl", recipe)


def test_wrong_credentials_fail_fast_with_a_clear_error_and_no_secret_leak(tmp_path, s3_env, private_s3):
    endpoint, _ = private_s3(INITIAL_NO_AUTH_ACTION_COUNT="0")  # this server checks every key
    recipe = make_recipe(tmp_path, rows=300, checkpoint_dir="s3://any-bucket/ckpt")
    proc = dj_process(recipe, "wc", env={"AWS_ENDPOINT_URL": endpoint})
    assert proc.returncode == 5
    assert "access denied" in proc.stderr and "check the credentials" in proc.stderr
    job = job_files(tmp_path, "wc")
    assert event_types(job.events())[-1] == "JOB_FAILED"
    assert SECRET_KEY not in proc.stderr + proc.stdout + job.events_file.read_text() + job.summary_path.read_text()
    assert not (tmp_path / "jobs" / "wc" / "partitions").exists()


def test_endpoint_lost_mid_run_is_retried_then_fails_clearly_with_local_state_intact(tmp_path, s3_env, private_s3):
    endpoint, server = private_s3()
    fs = s3(endpoint)
    fs.mkdir("flaky-endpoint")
    ops = [{"clean_links_mapper": {}}, {"slow_mapper": {"seconds": 0.5}}]
    recipe = make_recipe(tmp_path, rows=300, process=ops, checkpoint_dir="s3://flaky-endpoint/ckpt",
                         retry={"max_retries": 1, "base_delay_s": 0.1, "max_delay_s": 0.2})
    proc = start_dj_process(recipe, "lost", env={"AWS_ENDPOINT_URL": endpoint})
    wait_for(lambda: "CHECKPOINT_SAVE" in event_types(events_so_far(tmp_path, "lost")), 90, "a checkpoint on S3",
             every=0.05, process=proc)
    server.kill()
    server.wait()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 6, stderr
    assert "StorageUnavailable" in stderr and endpoint in stderr and "check that the endpoint is up" in stderr
    evs = events(tmp_path, "lost")  # every line of the local log parses: nothing torn
    failed = [e for e in evs if e["event_type"] == "PARTITION_FAILED"]
    assert {e["retry_count"] for e in failed} == {0, 1} and any(e["final"] for e in failed)
    assert all("StorageUnavailable" in e["error"] for e in failed)
    assert event_types(evs)[-1] == "JOB_FAILED"
    s = summary(tmp_path, "lost")
    assert s["status"] == "failed" and s["exit_code"] == 6
    assert job_files(tmp_path, "lost").plan() is not None
