"""Stages: where a recipe is cut, each stage's tasks, the one stage runner, and the global dedup decision.

A recipe is cut at each global op (a deduplicator or a selector, alike): partitions run up to it
and write their rows' hashes (a selector's: the values it selects on), checkpointed with the state
they hash; one global step reads every partition's hashes *in partition order* and decides which
rows to drop, so the first occurrence in input order survives (a selector picks what it would over
one whole table) on any executor; the decision is written
under a digest of its inputs and reused on resume; then partitions go on from
their checkpointed state with the decision applied. `plan_stage`, `duplicate_decision`
and `decision_digest` are pure; `run_stage` and `decide` are their shells."""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, replace
from hashlib import sha256
from typing import Any, Callable, Optional, Sequence

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from .checkpoint import keys_by_partition
from .config import Recipe, export_format
from .events import EventLog, EventType
from .executors import Executor
from .faults import failpoint
from .jobs import JobPaths
from .ops.base import GlobalOp
from .plan import Plan
from .run import PartitionTask, done_root, hashes_path, is_done
from .scheduler import RetryPolicy, Scheduler
from .storage import Storage, join
from .tracer import TraceSettings


def stage_ends(ops: list[Any]) -> list[int]:
    """Where each stage stops: at every global op (deduplicator, selector), then at the end of the recipe."""
    return [i for i, op in enumerate(ops) if isinstance(op, GlobalOp)] + [len(ops)]


@dataclass(frozen=True)
class Decision:
    digest: str
    drops: dict[int, list[int]]  # partition id -> row positions to drop
    rows_in: int = 0
    rows_out: int = 0


def stage_tasks(r: Recipe, paths: JobPaths, storage: Storage, job_id: str, plan: Plan, ops: list[Any], end: int,
                decisions: dict[int, Decision], stage: int, stages: int) -> list[PartitionTask]:
    """One task per planned partition: ops [0, end) with the decisions taken so far."""
    result_format = export_format(r.export_path) if r.export_path else "parquet"
    # Result shards are encoded for the export: a resume that changes the export's format
    # (or asks for stats) must not reuse shards made for the old one.
    results_root = join(paths.results, result_format + ("-stats" if r.export_stats else "")
                        + ("-keepstats" if r.keep_stats_in_res_ds else ""))
    return [PartitionTask(
        job_id=job_id, partition=part, ops=ops, strategy=r.checkpoint.effective, n_ops=r.checkpoint.n_ops,
        op_names=r.checkpoint.op_names, checkpoint_root=paths.checkpoint_root, results_root=results_root,
        intermediate_root=paths.intermediate if r.preserve_intermediate else None,
        storage_options=storage.options, fmt=r.intermediate_format,
        compression=r.intermediate_storage.compression, memory_map_arrow=r.memory_map_arrow,
        end=end, stage=stage, stages=stages,
        result_format=result_format, export_stats=r.export_stats, keep_stats=r.keep_stats_in_res_ds,
        batch_rows=r.arrow_batch_rows, trace=TraceSettings.of(r),
        decisions={i: (d.digest, d.drops.get(part.partition_id, [])) for i, d in decisions.items()})
        for part in plan.partitions]


def plan_stage(tasks: list[PartitionTask], done: set[str]) -> tuple[list[PartitionTask], list[PartitionTask]]:
    """(skip, pending): the tasks whose stage product already exists for this recipe, and the rest.

    `done` is one listing of the stage's product directory, shared by all its partitions."""
    skip = [t for t in tasks if is_done(t, done)]
    skipped = {id(t) for t in skip}
    return skip, [t for t in tasks if id(t) not in skipped]


@dataclass(frozen=True)
class StageResult:
    """What one stage run did: partitions skipped (done earlier), run, failed for good; and whether its
    scheduler saw a stop request (then the unfinished partitions yielded at an op boundary)."""

    skipped: tuple[int, ...]
    ran: tuple[int, ...]
    failed: tuple[tuple[int, str], ...]  # (partition id, error)
    stopped: bool


@dataclass(frozen=True)
class StageHooks:
    """How run_stage talks to its driver: events, the stop question, a periodic tick, and the
    rows a skipped partition put out (recorded by an earlier run)."""

    emit: Callable[..., Any]
    should_stop: Callable[[], bool] = lambda: False
    tick: Callable[[], None] = lambda: None
    on_done: Callable[[PartitionTask], None] = lambda task: None  # a task's product exists (skipped or completed)
    output_rows: Callable[[int], Optional[int]] = lambda pid: None


def run_stage(tasks: list[PartitionTask], executor: Executor, storage: Storage, policy: RetryPolicy, slots: int,
              hooks: StageHooks) -> StageResult:
    """Runs one stage: skip what is done for this recipe, run the rest np at a time with retries.

    One listing of the stage's products and one of the checkpoints, whatever the partition count."""
    skip, pending = plan_stage(tasks, set(storage.listdir(done_root(tasks[0]))))
    last = tasks[0].stop_at == len(tasks[0].ops)
    for task in skip:
        pid = task.partition.partition_id
        hooks.emit(EventType.PARTITION_SKIPPED, partition_id=pid, rows_in=task.partition.sample_count,
                   rows_out=hooks.output_rows(pid) if last else None, stage=task.stage, stages=task.stages,
                   message="already completed for this recipe")
        hooks.on_done(task)
    if skip:
        hooks.emit(EventType.INFO, message=f"resuming: {len(skip)} of {len(tasks)} partitions already done",
                   skipped=len(skip), stage=tasks[0].stage)
    saved = keys_by_partition(storage.listdir(tasks[0].checkpoint_root))
    pending = [replace(t, checkpoint_keys=frozenset(saved.get(t.partition.partition_id, ()))) for t in pending]
    stopped = False

    def should_stop() -> bool:
        nonlocal stopped
        stopped = stopped or hooks.should_stop()
        return stopped

    failed = Scheduler(executor, slots, policy, hooks.emit, should_stop, hooks.tick, on_done=hooks.on_done).run(pending)
    return StageResult(skipped=tuple(t.partition.partition_id for t in skip),
                       ran=tuple(t.partition.partition_id for t in pending), failed=tuple(failed), stopped=stopped)


def decision_digest(tasks: list[PartitionTask]) -> str:
    """Identity of a decision: the deduplicator's params and exactly which hashes it read."""
    end = tasks[0].stop_at
    basis = [tasks[0].ops[end].op_name, tasks[0].ops[end].params(), [hashes_path(t).rsplit("/", 1)[-1] for t in tasks]]
    return sha256(orjson.dumps(basis, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:16]


def duplicate_decision(op: GlobalOp, digest: str, pids: Sequence[int], hashes: Sequence[pa.Array]) -> Decision:
    """Which rows each partition drops, given every partition's hashes in partition order."""
    drops = op.drops(list(hashes))
    rows_in = sum(len(h) for h in hashes)
    return Decision(digest, {pid: list(map(int, d)) for pid, d in zip(pids, drops)},
                    rows_in, rows_in - sum(len(d) for d in drops))


def decision_record(end: int, op: GlobalOp, decision: Decision) -> bytes:
    """The saved decision, as `decide` writes and reads it back."""
    return orjson.dumps({"op_idx": end, "op_name": op.op_name, "params": op.params(), "rows_in": decision.rows_in,
                         "rows_out": decision.rows_out, "drops": decision.drops},
                        option=orjson.OPT_NON_STR_KEYS, default=str)


def read_decision(digest: str, data: bytes) -> Decision:
    saved = orjson.loads(data)
    return Decision(digest, {int(k): v for k, v in saved["drops"].items()}, saved.get("rows_in", 0),
                    saved.get("rows_out", 0))


def decide(storage: Storage, log: EventLog, tasks: list[PartitionTask], checkpoint_root: str) -> Decision:
    """The decision for the deduplicator at the tasks' end: the saved one, or made and saved now."""
    end = tasks[0].stop_at
    op = tasks[0].ops[end]
    digest = decision_digest(tasks)
    path = join(checkpoint_root, f"dedup_op{end:03d}_{digest}.json")
    try:
        decision = read_decision(digest, storage.read_bytes(path))
        log.emit(EventType.CHECKPOINT_LOAD, op_idx=end, op_name=op.op_name, checkpoint_path=path,
                 message=f"reusing the global {op.global_label} decision")
        return decision
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError):
        pass  # none, or torn by a killed writer: decide again
    log.emit(EventType.OP_START, op_idx=end, op_name=op.op_name, message=f"global {op.global_label} across partitions")
    t0 = time.perf_counter()
    hashes = [pq.ParquetFile(io.BytesIO(storage.read_bytes(hashes_path(t)))).read().column("hash").combine_chunks()
              for t in tasks]
    decision = duplicate_decision(op, digest, [t.partition.partition_id for t in tasks], hashes)
    failpoint("dedup_decide")
    storage.put_bytes(path, decision_record(end, op, decision))
    log.emit(EventType.OP_COMPLETE, op_idx=end, op_name=op.op_name, rows_in=decision.rows_in,
             rows_out=decision.rows_out, duration_s=time.perf_counter() - t0,
             message=f"global {op.global_label} decided")
    log.emit(EventType.CHECKPOINT_SAVE, op_idx=end, op_name=op.op_name, checkpoint_path=path,
             rows_out=decision.rows_out, message=f"global {op.global_label} decision")
    return decision
