"""run_partition(): the ops of a recipe over one partition, resuming from its best checkpoint.

Both executors call this; it is the only place ops meet data. Events go to `emit`
as they happen (the driver writes them). `should_stop` is polled between ops: on a
stop request the current state is checkpointed (if the strategy has not just done
so) before the partition yields, so no finished op is ever redone."""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from .checkpoint import Checkpoints, checkpoint_key, encode_table, should_checkpoint
from .config import Strategy
from .events import EventType, make_event
from .faults import failpoint
from .plan import Partition, partition_name
from .storage import Storage, StorageOptions, join

Emit = Callable[[dict[str, Any]], None]


class PartitionInterrupted(Exception):
    """The partition yielded to a stop request after checkpointing its progress."""


@dataclass
class PartitionTask:
    """Everything a worker needs, picklable; data itself is read from storage."""

    job_id: str
    partition: Partition
    ops: list[Any]
    strategy: Strategy
    n_ops: int
    op_names: list[str]
    checkpoint_root: str
    results_root: str
    intermediate_root: Optional[str]
    storage_options: StorageOptions
    fmt: str = "parquet"
    compression: str = "zstd"
    attempt: int = 0


@dataclass
class PartitionResult:
    partition_id: int
    rows_in: int
    rows_out: int
    result_path: str
    reused_ops: int
    duration_s: float
    op_metrics: list[dict[str, Any]] = field(default_factory=list)


def result_store(task: PartitionTask, storage: Storage) -> Checkpoints:
    return Checkpoints(storage, task.results_root, "parquet", "zstd")


def is_done(task: PartitionTask, storage: Storage) -> bool:
    """A partition is done when its result for *this* recipe exists (a manifest with the full key)."""
    key = checkpoint_key(task.partition, task.ops, len(task.ops))
    return key in result_store(task, storage).keys_for(task.partition.partition_id)


def resume_point(task: PartitionTask, store: Checkpoints, emit: Emit) -> tuple[int, Optional[pa.Table]]:
    """The longest op prefix with a verified checkpoint; invalid ones are reported and discarded."""
    keys = store.keys_for(task.partition.partition_id)
    for upto in range(len(task.ops), 0, -1):
        key = checkpoint_key(task.partition, task.ops, upto)
        if key not in keys:
            continue
        table, problem = store.load(key)
        if table is not None:
            emit(make_event(EventType.CHECKPOINT_LOAD, task.job_id, partition_id=task.partition.partition_id,
                            op_idx=upto - 1, op_name=task.ops[upto - 1].op_name, rows_out=table.num_rows,
                            checkpoint_path=store.manifest_path(key), reused_ops=upto,
                            message=f"reusing {upto}/{len(task.ops)} ops from checkpoint"))
            return upto, table
        emit(make_event(EventType.CHECKPOINT_INVALID, task.job_id, partition_id=task.partition.partition_id,
                        op_idx=upto - 1, checkpoint_path=store.manifest_path(key), error=problem,
                        message="checkpoint cannot be trusted; recomputing"))
        store.discard(key)
    return 0, None


def run_partition(task: PartitionTask, emit: Emit, should_stop: Callable[[], bool] = lambda: False) -> PartitionResult:
    storage = Storage(task.storage_options)
    store = Checkpoints(storage, task.checkpoint_root, task.fmt, task.compression)
    pid, ops, job = task.partition.partition_id, task.ops, task.job_id
    started = time.time()
    emit(make_event(EventType.PARTITION_START, job, partition_id=pid, retry_count=task.attempt,
                    rows_in=task.partition.sample_count))
    upto, table = resume_point(task, store, emit) if task.strategy != Strategy.disabled else (0, None)
    if table is None:
        table = pq.read_table(storage.open(task.partition.path, "rb"))
    rows_in, metrics = task.partition.sample_count, []
    checkpointed_at = upto
    for idx in range(upto, len(ops)):
        op = ops[idx]
        before = table.num_rows
        emit(make_event(EventType.OP_START, job, partition_id=pid, op_idx=idx, op_name=op.op_name, rows_in=before))
        t0 = time.perf_counter()
        try:
            table = op.process(table)
        except Exception as err:
            emit(make_event(EventType.OP_FAILED, job, partition_id=pid, op_idx=idx, op_name=op.op_name,
                            rows_in=before, retry_count=task.attempt, error=f"{type(err).__name__}: {err}",
                            stack_trace=traceback.format_exc()))
            raise
        took = time.perf_counter() - t0
        failpoint("op_done")
        metrics.append({"op_idx": idx, "op_name": op.op_name, "rows_in": before, "rows_out": table.num_rows, "duration_s": took})
        emit(make_event(EventType.OP_COMPLETE, job, partition_id=pid, op_idx=idx, op_name=op.op_name,
                        rows_in=before, rows_out=table.num_rows, duration_s=took))
        if task.intermediate_root:
            name = f"op_{idx:03d}_{op.op_name}.{task.fmt}"
            storage.put_bytes(join(task.intermediate_root, partition_name(pid), name),
                              encode_table(table, task.fmt, task.compression))
        last = idx == len(ops) - 1
        stopping = not last and should_stop()
        if should_checkpoint(task.strategy, idx, len(ops), op.op_name, task.n_ops, task.op_names) or \
                (stopping and checkpointed_at != idx + 1):
            save_checkpoint(task, store, table, idx, emit, reason="stop requested" if stopping else "strategy")
            checkpointed_at = idx + 1
        if stopping:
            raise PartitionInterrupted(f"partition {pid} stopped after op {idx} ({op.op_name})")
    results = result_store(task, storage)
    key = checkpoint_key(task.partition, ops, len(ops))
    results.write(key, table, pid, len(ops), [op.op_name for op in ops])
    return PartitionResult(pid, rows_in, table.num_rows, results.data_path(key), upto, time.time() - started, metrics)


def save_checkpoint(task: PartitionTask, store: Checkpoints, table: pa.Table, idx: int, emit: Emit, reason: str) -> None:
    key = checkpoint_key(task.partition, task.ops, idx + 1)
    t0 = time.perf_counter()
    path = store.write(key, table, task.partition.partition_id, idx + 1, [op.op_name for op in task.ops[: idx + 1]])
    emit(make_event(EventType.CHECKPOINT_SAVE, task.job_id, partition_id=task.partition.partition_id, op_idx=idx,
                    op_name=task.ops[idx].op_name, rows_out=table.num_rows, checkpoint_path=path,
                    duration_s=time.perf_counter() - t0, message=reason))
