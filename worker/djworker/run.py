"""run_partition(): a span of a recipe's ops over one partition, resuming from its best checkpoint.

Both executors call this; it is the only place ops meet data. Events go to `emit`
as they happen (the driver writes them). `should_stop` is polled between ops: on a
stop request the current state is checkpointed (if the strategy has not just done
so) before the partition yields, so no finished op is ever redone.

A recipe with deduplicators runs in stages (see stages.py): a task runs ops
[0, end) where `end` is the next deduplicator without a global decision yet. Such a
task checkpoints its state at `end` and writes the rows' hashes for that
deduplicator; the driver decides globally; the next task applies the decision
(drops rows) and goes on. Without deduplicators, `end` is the recipe's length.

With open_tracer, a `Collector` (tracer.py) records what each traced op changed or removed and
is saved beside every checkpoint, so a resume carries the records of the ops it skips."""
from __future__ import annotations

import posixpath
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from .checkpoint import (Checkpoints, checkpoint_key, encode_table, manifest_name, read_partition, resolve_codec,
                         should_checkpoint)
from .config import Strategy
from .events import EventType, make_event
from .export import shard_bytes, stats_shard_path
from .faults import failpoint
from .ops.base import GlobalOp
from .plan import Partition, partition_name
from .storage import Storage, StorageOptions, join
from .tracer import Collector, TraceSettings

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
    memory_map_arrow: bool = False  # arrow_memory_mapping: map local Arrow checkpoints and partitions
    attempt: int = 0
    end: Optional[int] = None
    # op index of each deduplicator already decided -> (decision digest, row positions to drop here)
    decisions: dict[int, tuple[str, list[int]]] = field(default_factory=dict)
    stage: int = 0
    stages: int = 1
    result_format: str = "parquet"  # the export's format: jsonl or parquet
    export_stats: bool = False
    keep_stats: bool = False  # keep_stats_in_res_ds: the result rows keep their __dj__stats__ column
    batch_rows: Optional[int] = None  # intermediate_storage.use_arrow_batches: ops see at most this many rows at once
    # This partition's checkpoint keys from the driver's one listing at stage start (None: list here).
    # A listing per partition would cost O(partitions) each; a retry lists anyway (it may have saved some).
    checkpoint_keys: Optional[frozenset[str]] = None
    trace: Optional[TraceSettings] = None  # open_tracer's settings; None: the tracer costs nothing

    @property
    def stop_at(self) -> int:
        return len(self.ops) if self.end is None else self.end

    @property
    def digests(self) -> dict[int, str]:
        return {i: d for i, (d, _) in self.decisions.items()}

    def key(self, upto: int) -> str:
        return checkpoint_key(self.partition, self.ops, upto, self.digests)


@dataclass
class PartitionResult:
    partition_id: int
    rows_in: int
    rows_out: int
    result_path: str
    reused_ops: int
    duration_s: float
    op_metrics: list[dict[str, Any]] = field(default_factory=list)
    storage_retries: int = 0  # object-storage requests and reads this attempt repeated (storage.py)


def result_store(task: PartitionTask, storage: Storage) -> Checkpoints:
    """Results are stored already encoded for the export, so export is a concatenation."""
    # shard_bytes writes Parquet results with zstd; JSON lines plain, ready to concatenate
    return Checkpoints(storage, task.results_root, task.result_format, "zstd" if task.result_format == "parquet" else "none")


def hashes_path(task: PartitionTask) -> str:
    """Where a stage's row hashes for the deduplicator at `end` go (keyed like the state they hash)."""
    return join(task.checkpoint_root, f"hashes_{task.key(task.stop_at)}.parquet")


def done_root(task: PartitionTask) -> str:
    """Where this stage's products live: the results, or (before a deduplicator) the checkpoints and hashes."""
    return task.results_root if task.stop_at == len(task.ops) else task.checkpoint_root


def is_done(task: PartitionTask, names: set[str]) -> bool:
    """Done when this stage's product for *this* recipe exists: the result, or the hashes + state.

    `names` is one listing of done_root(task), shared by all of a stage's partitions: a listing per
    partition would cost O(partitions^2) on object storage."""
    manifest = manifest_name(task.key(task.stop_at))
    if task.stop_at == len(task.ops):
        return manifest in names
    has_state = task.stop_at == 0 or manifest in names
    return has_state and posixpath.basename(hashes_path(task)) in names


def resume_point(task: PartitionTask, store: Checkpoints, emit: Emit) -> tuple[int, Optional[pa.Table]]:
    """The longest op prefix with a verified checkpoint; invalid ones are reported and discarded."""
    known = task.checkpoint_keys if task.attempt == 0 else None
    keys = known if known is not None else store.keys_for(task.partition.partition_id)
    for upto in range(task.stop_at, 0, -1):
        key = task.key(upto)
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
    emit(make_event(EventType.DEBUG, task.job_id, partition_id=task.partition.partition_id,
                    message=f"no checkpoint of this recipe's ops among {len(keys)} for this partition; "
                            "starting from its input slice"))
    return 0, None


def apply_op(task: PartitionTask, idx: int, table: pa.Table,
             process: Optional[Callable[[pa.Table], pa.Table]] = None) -> pa.Table:
    """`process` replaces the op's own (the tracer's recording one); deduplicators apply their decision."""
    op = task.ops[idx]
    if isinstance(op, GlobalOp):
        drop = set(task.decisions[idx][1])
        return table.filter(pa.array([i not in drop for i in range(table.num_rows)], pa.bool_()))
    process = process or op.process
    if task.batch_rows and table.num_rows > task.batch_rows:
        return in_batches(process, table, task.batch_rows)
    return process(table)


def in_batches(process: Callable[[pa.Table], pa.Table], table: pa.Table, rows: int) -> pa.Table:
    """Mappers and filters are row-wise, so batch by batch gives the same rows; what an op
    builds in Python (texts, stats) then lives for one batch, not the whole partition."""
    parts = [process(table.slice(start, rows)) for start in range(0, table.num_rows, rows)]
    return pa.concat_tables(parts, promote_options="permissive")


def run_partition(task: PartitionTask, emit: Emit, should_stop: Callable[[], bool] = lambda: False) -> PartitionResult:
    storage = Storage(task.storage_options)
    store = Checkpoints(storage, task.checkpoint_root, task.fmt, task.compression, task.memory_map_arrow, durable=False)
    pid, ops, job, end = task.partition.partition_id, task.ops, task.job_id, task.stop_at
    started = time.time()
    emit(make_event(EventType.PARTITION_START, job, partition_id=pid, retry_count=task.attempt,
                    rows_in=task.partition.sample_count, stage=task.stage, stages=task.stages))
    # Checkpoints are looked for whatever the strategy: a stop flushes one even when disabled.
    upto, table = resume_point(task, store, emit)
    if table is None:
        table = read_partition(storage, task.partition.path, task.memory_map_arrow)
    rows_in, metrics = table.num_rows, []
    checkpointed_at = upto
    trace = Collector.resumed(storage, task.trace, task.checkpoint_root, task.key(upto) if upto else None) \
        if task.trace else None
    for idx in range(upto, end):
        op = ops[idx]
        before = table.num_rows
        emit(make_event(EventType.OP_START, job, partition_id=pid, op_idx=idx, op_name=op.op_name, rows_in=before))
        t0 = time.perf_counter()
        try:
            table = apply_op(task, idx, table, trace.process(idx, op) if trace else None)
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
            name = f"op_{idx:03d}_{op.op_name}.{resolve_codec(task.fmt, task.compression).suffix}"
            storage.put_bytes(join(task.intermediate_root, partition_name(pid), name),
                              encode_table(table, task.fmt, task.compression))
        last = idx == len(ops) - 1
        stopping = not last and should_stop()
        if should_checkpoint(task.strategy, idx, len(ops), op.op_name, task.n_ops, task.op_names) or \
                (stopping and checkpointed_at != idx + 1):
            if trace:
                trace.save(storage, task.checkpoint_root, task.key(idx + 1))
            save_checkpoint(task, store, table, idx, emit, reason="stop requested" if stopping else "strategy")
            checkpointed_at = idx + 1
        if stopping:
            raise PartitionInterrupted(f"partition {pid} stopped after op {idx} ({op.op_name})")
    if trace:  # before the stage's product: a done partition always has its records
        trace.save(storage, task.checkpoint_root, task.key(end))
    if end < len(ops):
        return _finish_stage(task, storage, store, table, checkpointed_at, emit, rows_in, upto, started, metrics)
    results = result_store(task, storage)
    key = task.key(len(ops))
    data, stats = shard_bytes(table, task.result_format, task.export_stats, task.keep_stats)
    if stats is not None:
        storage.put_bytes(stats_shard_path(results, key), stats)
    results.write_encoded(key, data, table.num_rows, table.schema, pid, len(ops), [op.op_name for op in ops])
    return PartitionResult(pid, rows_in, table.num_rows, results.data_path(key), upto, time.time() - started, metrics,
                           storage.retries)


def _finish_stage(task, storage, store, table, checkpointed_at, emit, rows_in, upto, started, metrics) -> PartitionResult:
    """Before a global op: keep the state (the next stage starts from it) and write its row keys."""
    end = task.stop_at
    if checkpointed_at != end:
        reason = f"before global {task.ops[end].global_label}"
        save_checkpoint(task, store, table, end - 1, emit, reason=reason) if end else None
    hashes = pa.table({"hash": task.ops[end].row_keys(table)})
    buf = pa.BufferOutputStream()
    pq.write_table(hashes, buf, compression="zstd")
    storage.put_bytes(hashes_path(task), buf.getvalue().to_pybytes())
    return PartitionResult(task.partition.partition_id, rows_in, table.num_rows, hashes_path(task), upto,
                           time.time() - started, metrics, storage.retries)


def save_checkpoint(task: PartitionTask, store: Checkpoints, table: pa.Table, idx: int, emit: Emit, reason: str) -> None:
    key = task.key(idx + 1)
    t0 = time.perf_counter()
    path = store.write(key, table, task.partition.partition_id, idx + 1, [op.op_name for op in task.ops[: idx + 1]])
    emit(make_event(EventType.CHECKPOINT_SAVE, task.job_id, partition_id=task.partition.partition_id, op_idx=idx,
                    op_name=task.ops[idx].op_name, rows_out=table.num_rows, checkpoint_path=path,
                    duration_s=time.perf_counter() - t0, message=reason))
