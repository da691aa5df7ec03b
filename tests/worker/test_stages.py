"""The stage runner and the global dedup decision, without a job: scripted executors, in-memory hashes.

run_stage's contract (skip what is done, retry, report failures and stops in a StageResult, never
touch the plan) and the pure half of `decide` (which rows each partition drops, the decision's
identity and its saved record)."""
from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from djworker.checkpoint import manifest_name
from djworker.config import Strategy
from djworker.ops import build_op
from djworker.plan import Partition, Plan
from djworker.run import PartitionInterrupted, PartitionResult, PartitionTask, hashes_path
from djworker.scheduler import RetryPolicy
from djworker.stages import (Decision, StageHooks, decision_digest, decision_record, duplicate_decision,
                             read_decision, run_stage)
from djworker.storage import Storage, StorageOptions

EXACT = build_op("document_deduplicator", {}, "process[1]")
OPS = [build_op("clean_links_mapper", {}, "process[0]"), EXACT]


def part(i: int, samples: int = 10) -> Partition:
    return Partition(partition_id=i, path="", sample_count=samples, bytes=1, checksum=f"{i:020d}", source={})


def tasks(n: int, end: int, root: str = "/ck", results: str = "/res") -> list[PartitionTask]:
    return [PartitionTask(job_id="j", partition=part(i), ops=OPS, strategy=Strategy.every_op, n_ops=1, op_names=[],
                          checkpoint_root=root, results_root=results, intermediate_root=None,
                          storage_options=StorageOptions(), end=end) for i in range(n)]


class Scripted:
    """Each partition's attempts as scripted: an exception to raise, or success with rows_out = 7."""

    stop_is_signal_safe = False

    def __init__(self, script: dict[int, list[Any]] | None = None):
        self.script, self.submitted, self.stops = script or {}, [], 0

    def submit(self, task: PartitionTask) -> Future:
        self.submitted.append((task.partition.partition_id, task.attempt, task.checkpoint_keys))
        fut: Future = Future()
        attempts = self.script.get(task.partition.partition_id, [])
        outcome = attempts[task.attempt] if task.attempt < len(attempts) else None
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(PartitionResult(task.partition.partition_id, 10, 7, "", 0, 0.0))
        return fut

    def request_stop(self) -> None:
        self.stops += 1


def recorder() -> tuple[list[tuple[str, dict]], Any]:
    seen: list[tuple[str, dict]] = []
    return seen, lambda kind, **fields: seen.append((str(getattr(kind, "value", kind)), fields))


def test_run_stage_skips_what_is_done_runs_the_rest_and_never_touches_the_plan(tmp_path):
    ts = tasks(4, end=2, root=str(tmp_path / "ck"), results=str(tmp_path / "res"))
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / manifest_name(ts[2].key(2))).write_text("{}")  # partition 2 is done for this recipe
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / manifest_name(ts[1].key(1))).write_text("{}")  # partition 1 has a checkpoint
    before = [t.partition.model_dump() for t in ts]
    seen, emit = recorder()
    done: list[int] = []
    executor = Scripted()
    result = run_stage(ts, executor, Storage(), RetryPolicy(0), 2,
                       StageHooks(emit=emit, on_done=lambda t: done.append(t.partition.partition_id),
                                  output_rows=lambda pid: 5))
    assert (result.skipped, result.ran, result.failed, result.stopped) == ((2,), (0, 1, 3), (), False)
    assert sorted(done) == [0, 1, 2, 3]
    skips = [f for k, f in seen if k == "PARTITION_SKIPPED"]
    assert [(f["partition_id"], f["rows_out"]) for f in skips] == [(2, 5)]  # the recorded output, last stage
    assert {pid: keys for pid, _, keys in executor.submitted} == {0: frozenset(), 1: {ts[1].key(1)}, 3: frozenset()}
    assert [t.partition.model_dump() for t in ts] == before


def test_run_stage_reports_permanent_failures_after_retries_and_keeps_the_others():
    boom = RuntimeError("boom")
    seen, emit = recorder()
    result = run_stage(tasks(3, end=2), Scripted({1: [boom, boom, boom]}), Storage(),
                       RetryPolicy(2, "fixed", 0.01, 0.01, 0.0), 2, StageHooks(emit=emit))
    assert result.ran == (0, 1, 2) and [pid for pid, _ in result.failed] == [1] and "boom" in result.failed[0][1]
    assert [(f["retry_count"], f["final"]) for k, f in seen if k == "PARTITION_FAILED"] == \
        [(0, False), (1, False), (2, True)]
    assert sorted(f["partition_id"] for k, f in seen if k == "PARTITION_COMPLETE") == [0, 2]


def test_a_stop_seen_by_the_scheduler_ends_the_stage_as_stopped_not_failed():
    interrupted = PartitionInterrupted("partition 0 stopped after op 0")
    asked = iter([False, True])
    executor = Scripted({0: [interrupted]})
    result = run_stage(tasks(3, end=2), executor, Storage(), RetryPolicy(2), 1,
                       StageHooks(emit=recorder()[1], should_stop=lambda: next(asked, True)))
    assert result.stopped and result.failed == () and executor.stops >= 1
    assert [pid for pid, _, _ in executor.submitted] == [0]  # nothing new starts once a stop is asked


def test_the_first_copy_in_partition_order_survives_whatever_the_partition():
    hashes = [pa.array(["a", "b", "a"]), pa.array(["c", "b"]), pa.array(["a", "d", "c"])]
    decision = duplicate_decision(EXACT, "dg", [5, 6, 7], hashes)
    assert decision.drops == {5: [2], 6: [1], 7: [0, 2]}
    assert (decision.digest, decision.rows_in, decision.rows_out) == ("dg", 8, 4)


def test_no_duplicates_drops_nothing_and_an_empty_partition_is_fine():
    decision = duplicate_decision(EXACT, "dg", [0, 1], [pa.array(["x", "y"]), pa.array([], pa.string())])
    assert decision == Decision("dg", {0: [], 1: []}, 2, 2)


def test_a_saved_decision_reads_back_equal():
    decision = Decision("dg", {0: [1, 3], 12: []}, 9, 7)
    assert read_decision("dg", decision_record(1, EXACT, decision)) == decision


def test_the_decision_digest_changes_with_the_params_and_with_the_hashes_read():
    ts = tasks(3, end=1)
    base = decision_digest(ts)
    assert decision_digest(tasks(3, end=1)) == base
    other = tasks(3, end=1)
    for t in other:
        t.ops = [OPS[0], build_op("document_deduplicator", {"lowercase": True}, "process[1]")]
    assert decision_digest(other) != base
    assert decision_digest(ts[:2]) != base
    assert hashes_path(ts[0]).startswith("/ck/hashes_")


def test_the_plan_is_a_value_and_reads_an_older_version_s_run_fields():
    with pytest.raises(ValidationError):
        part(0).sample_count = 3
    old = {"schema_version": 1, "job_id": "j", "dataset_path": "d", "input_files": [], "input_fingerprint": "f",
           "text_key": "text", "partition_size": 10, "max_size_mb": 1.0, "total_samples": 10, "rejected_samples": 0,
           "rejects_path": None, "created_at": 0.0,
           "partitions": [{**part(0).model_dump(), "status": "completed", "retries": 1, "output_samples": 9,
                           "start_time": 1.0, "end_time": 2.0, "error": None}]}
    plan = Plan.model_validate(old)
    assert plan.partitions == (part(0),) and "status" not in plan.model_dump()["partitions"][0]
