"""Object storage misbehaving: 503 SlowDown, 500 InternalError, throttling, seconds of latency,
connections reset mid-body and truncated answers, injected by tests/support/faulty_s3.py between
s3fs and moto's server.

- At a 5 % fault rate, jobs on the local and ray_partitioned executors, with checkpoints, partitions
  and the export on S3, complete with output byte-identical to a clean run; the retries it took
  are counted in PERFORMANCE_METRIC and job_summary.json.
- Retries are bounded (a request S3_ATTEMPTS times, a torn read READ_ATTEMPTS times) and jittered.
- At 100 % the job fails with a storage error (exit 5 or 6) that says so; once the faults stop,
  the resume reuses every result written before and gives the clean run's output.
- A torn or silently shortened object is never loaded as a checkpoint."""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pytest

from djworker.checkpoint import Checkpoints
from djworker.executors.ray import ray_available
from djworker.storage import READ_ATTEMPTS, READ_BACKOFF_S, S3_ATTEMPTS, Storage, StorageOptions
from tests.support.engine import dj_process, events, make_recipe, start_dj_process, summary, wait_exit
from tests.support.faulty_s3 import FaultPlan, FaultyS3
from tests.support.ray import ray_runs  # noqa: F401  (fixture)

pytestmark = pytest.mark.s3
FAST_LATENCY = (0.2, 1.5)  # seconds: enough to be seen, short enough for CI


@pytest.fixture
def proxy(s3_endpoint: str, s3_env: dict[str, str]) -> Iterator[FaultyS3]:
    p = FaultyS3(s3_endpoint, FaultPlan(0.0, latency_s=FAST_LATENCY), seed=20261205).start()
    yield p
    p.stop()


@pytest.fixture
def bucket(s3_endpoint: str, s3_env: dict[str, str]) -> str:
    import s3fs

    name = f"dj-faults-{random.randrange(1 << 30):x}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True).mkdir(name)
    return name


def upstream_fs(endpoint: str):
    import s3fs

    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True,
                             use_listings_cache=False)


def s3_recipe(tmp: Path, bucket: str, name: str, **overrides) -> Path:
    return make_recipe(tmp, rows=600, name=name, checkpoint_dir=f"s3://{bucket}/ckpt",
                       export_path=f"s3://{bucket}/{name}/result.jsonl", checkpoint={"strategy": "every_op"},
                       **overrides)


def clean_output(tmp: Path, bucket: str, endpoint: str, **overrides) -> bytes:
    """The reference: the same recipe, straight to moto, no faults."""
    recipe = s3_recipe(tmp, bucket, "clean", **overrides)
    done = dj_process(recipe, "clean", env={"AWS_ENDPOINT_URL": endpoint})
    assert done.returncode == 0, done.stderr[-3000:]
    return upstream_fs(endpoint).cat(f"{bucket}/clean/result.jsonl")


def assert_retries_counted(tmp: Path, job: str, proxy: FaultyS3) -> None:
    perf = [e for e in events(tmp, job) if e["event_type"] == "PERFORMANCE_METRIC"][-1]
    assert proxy.faults > 0, proxy.tally
    refused = sum(proxy.tally[k] for k in ("slowdown", "internal", "throttle"))
    # every refused request is retried by botocore and counted; resets and truncations are too,
    # except where aiohttp silently repeats a request on a pooled connection closed before any answer
    assert refused <= perf["storage_retries"] <= proxy.faults, (perf, proxy.tally)
    assert summary(tmp, job)["performance"]["storage_retries"] == perf["storage_retries"]


def test_a_job_on_s3_at_a_5_percent_fault_rate_completes_with_the_clean_output(tmp_path, proxy, bucket, s3_endpoint):
    reference = clean_output(tmp_path, bucket, s3_endpoint)
    recipe = s3_recipe(tmp_path, bucket, "faulty")
    proxy.set(rate=0.05)
    done = dj_process(recipe, "faulty", env={"AWS_ENDPOINT_URL": proxy.url}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert upstream_fs(s3_endpoint).cat(f"{bucket}/faulty/result.jsonl") == reference
    assert_retries_counted(tmp_path, "faulty", proxy)
    types = [e["event_type"] for e in events(tmp_path, "faulty")]
    assert types.count("JOB_COMPLETE") == 1 and "CHECKPOINT_INVALID" not in types


@pytest.mark.ray
@pytest.mark.skipif(ray_available() is not None, reason=str(ray_available()))
def test_a_ray_partitioned_job_on_s3_at_a_5_percent_fault_rate_completes_with_the_clean_output(
        tmp_path, proxy, bucket, s3_endpoint, ray_runs):
    reference = clean_output(tmp_path, bucket, s3_endpoint)
    recipe = s3_recipe(tmp_path, bucket, "faulty", executor_type="ray_partitioned")
    proxy.set(rate=0.05)
    run = ray_runs(recipe, "faulty", env={"AWS_ENDPOINT_URL": proxy.url})
    assert run.finish(timeout=600) == 0, run.output[-3000:]
    assert upstream_fs(s3_endpoint).cat(f"{bucket}/faulty/result.jsonl") == reference
    assert_retries_counted(tmp_path, "faulty", proxy)


def test_at_100_percent_the_job_fails_with_a_storage_error_and_the_resume_reuses_what_was_written(
        tmp_path, proxy, bucket, s3_endpoint):
    ops = [{"clean_links_mapper": {}}, {"slow_mapper": {"seconds": 0.3}}, {"text_length_filter": {"min_len": 100}}]
    reference = clean_output(tmp_path, bucket, s3_endpoint, process=ops)
    recipe = s3_recipe(tmp_path, bucket, "outage", process=ops, partition={"size": 50})
    proc = start_dj_process(recipe, "outage", env={"AWS_ENDPOINT_URL": proxy.url})
    deadline = time.time() + 120
    while sum(e["event_type"] == "PARTITION_COMPLETE" for e in _events(tmp_path, "outage")) < 3:
        assert proc.poll() is None and time.time() < deadline, "no partition completed"
        time.sleep(0.05)
    proxy.set(rate=1.0, kinds=("slowdown", "internal", "reset"))
    code = wait_exit(proc, 300)
    err = proc.stderr.read()
    assert code in (5, 6), err[-3000:]
    s = summary(tmp_path, "outage")
    assert s["status"] == "failed" and s["exit_code"] == code
    assert proxy.url in s["error"] and "check that the" in s["error"] and "resume with" in s["error"], s["error"]
    fs = upstream_fs(s3_endpoint)
    before = {p: fs.info(p)["ETag"] for p in fs.find(f"{bucket}/ckpt/outage/results")}
    assert before  # results written before the outage
    proxy.set(rate=0.0)
    resumed = dj_process(recipe, "outage", env={"AWS_ENDPOINT_URL": proxy.url})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert fs.cat(f"{bucket}/outage/result.jsonl") == reference
    after = {p: fs.info(p)["ETag"] for p in fs.find(f"{bucket}/ckpt/outage/results")}
    assert before.items() <= after.items()  # reused, not rewritten
    last_run = _events(tmp_path, "outage")
    last_run = last_run[max(i for i, e in enumerate(last_run) if e["event_type"] == "JOB_RESUMED"):]
    skipped = {e["partition_id"] for e in last_run if e["event_type"] == "PARTITION_SKIPPED"}
    assert len(skipped) >= sum(1 for p in before if p.endswith(".jsonl")), (skipped, before)


def _events(tmp: Path, job: str) -> list[dict]:
    from tests.support.engine import events_so_far

    return events_so_far(tmp, job)


# ---- the retry layers, one request at a time ------------------------------------------
def storage_via(proxy: FaultyS3) -> Storage:
    return Storage(StorageOptions(endpoint_url=proxy.url))


def test_a_refused_request_is_tried_s3_attempts_times_then_fails_as_storage_unavailable(proxy, bucket):
    st = storage_via(proxy)
    st.put_bytes(f"s3://{bucket}/k", b"x")
    proxy.set(rate=1.0, kinds=("internal",))
    proxy.tally.clear()
    with pytest.raises(Exception) as err:
        st.read_bytes(f"s3://{bucket}/k")
    assert type(err.value).__name__ == "StorageUnavailable" and proxy.url in str(err.value)
    assert proxy.tally["requests"] == S3_ATTEMPTS and st.retries == S3_ATTEMPTS - 1


def test_a_read_whose_body_is_cut_short_is_repeated_with_jittered_backoff_and_bounded(proxy, bucket, monkeypatch):
    st = storage_via(proxy)
    st.put_bytes(f"s3://{bucket}/k", b"y" * 100_000)
    slept: list[float] = []
    monkeypatch.setattr("djworker.storage.time.sleep", slept.append)
    proxy.set(rate=1.0, kinds=("truncate",), methods=("GET",))
    proxy.tally.clear()
    with pytest.raises(Exception) as err:
        st.read_bytes(f"s3://{bucket}/k")
    assert type(err.value).__name__ == "StorageUnavailable"
    assert proxy.tally["truncate"] == READ_ATTEMPTS and st.retries == READ_ATTEMPTS - 1, proxy.tally
    assert len(slept) == READ_ATTEMPTS - 1
    assert all(0 <= d <= READ_BACKOFF_S * 2 ** n for n, d in enumerate(slept)) and len(set(slept)) == len(slept)
    proxy.set(rate=0.2, kinds=("truncate", "reset"), methods=())
    assert all(st.read_bytes(f"s3://{bucket}/k") == b"y" * 100_000 for _ in range(10))  # torn, retried, whole


@pytest.mark.parametrize("kinds", [("truncate", "reset"), ("short",)])
def test_a_torn_or_short_object_is_never_loaded_as_a_checkpoint(proxy, bucket, kinds):
    """'short' is a body silently cut with a matching Content-Length: only the manifest's size and
    hash can tell. Every load gives the exact table, or an error / a reason not to trust it."""
    st = storage_via(proxy)
    store = Checkpoints(st, f"s3://{bucket}/ckpt", "parquet", "zstd")
    table = pa.table({"id": list(range(5000)), "text": [f"row {i} " * 20 for i in range(5000)]})
    store.write("k1", table, 0, 1, ["op"])
    proxy.set(rate=0.5, kinds=kinds)
    loaded = refused = 0
    for _ in range(30):
        try:
            got, problem = store.load("k1")
        except Exception as err:  # a read that stayed torn after its retries: the partition retries
            assert type(err).__name__ == "StorageUnavailable", err
            refused += 1
            continue
        if got is None:
            assert problem, problem
            refused += 1
        else:
            assert got.equals(table)
            loaded += 1
    assert loaded > 0 and proxy.faults > 0
    if kinds == ("short",):
        assert refused > 0  # half the reads were short: every one was caught


def test_proxy_decisions_are_deterministic_for_a_seed(s3_endpoint):
    plans = []
    for _ in range(2):
        p = FaultyS3(s3_endpoint, FaultPlan(0.3), seed=7)
        plans.append([p.draw() for _ in range(200)])
    assert plans[0] == plans[1] and any(kind for kind, _ in plans[0])
    other = FaultyS3(s3_endpoint, FaultPlan(0.3), seed=8)
    assert [other.draw() for _ in range(200)] != plans[0]

