"""Deduplicators as a checkpointed global stage of their own.

A recipe is cut at each deduplicator: partitions run up to it and write their rows'
hashes (checkpointed with the state they hash); one global step reads every
partition's hashes *in partition order* and decides which rows to drop, so the
first occurrence in input order survives on any executor; the decision is written
under a digest of its inputs and reused on resume; then partitions go on from
their checkpointed state with the decision applied."""
from __future__ import annotations

import io
import time
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

import orjson
import pyarrow.parquet as pq

from .events import EventLog, EventType
from .faults import failpoint
from .ops.base import Deduplicator
from .run import PartitionTask, hashes_path, is_done
from .storage import Storage, join


def stage_ends(ops: list[Any]) -> list[int]:
    """Where each stage stops: at every deduplicator, then at the end of the recipe."""
    return [i for i, op in enumerate(ops) if isinstance(op, Deduplicator)] + [len(ops)]


def plan_stage(tasks: list[PartitionTask], done: set[str]) -> tuple[list[PartitionTask], list[PartitionTask]]:
    """(skip, pending): the tasks whose stage product already exists for this recipe, and the rest.

    `done` is one listing of the stage's product directory, shared by all its partitions."""
    skip = [t for t in tasks if is_done(t, done)]
    skipped = {id(t) for t in skip}
    return skip, [t for t in tasks if id(t) not in skipped]


@dataclass(frozen=True)
class Decision:
    digest: str
    drops: dict[int, list[int]]  # partition id -> row positions to drop


def decision_digest(tasks: list[PartitionTask]) -> str:
    """Identity of a decision: the deduplicator's params and exactly which hashes it read."""
    end = tasks[0].stop_at
    basis = [tasks[0].ops[end].op_name, tasks[0].ops[end].params(), [hashes_path(t).rsplit("/", 1)[-1] for t in tasks]]
    return sha256(orjson.dumps(basis, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:16]


def decide(storage: Storage, log: EventLog, tasks: list[PartitionTask], checkpoint_root: str) -> Decision:
    end = tasks[0].stop_at
    op = tasks[0].ops[end]
    digest = decision_digest(tasks)
    path = join(checkpoint_root, f"dedup_op{end:03d}_{digest}.json")
    try:
        saved = orjson.loads(storage.read_bytes(path))
        log.emit(EventType.CHECKPOINT_LOAD, op_idx=end, op_name=op.op_name, checkpoint_path=path,
                 message="reusing the global deduplication decision")
        return Decision(digest, {int(k): v for k, v in saved["drops"].items()})
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError):
        pass
    log.emit(EventType.OP_START, op_idx=end, op_name=op.op_name, message="global deduplication across partitions")
    t0 = time.perf_counter()
    hashes = [pq.ParquetFile(io.BytesIO(storage.read_bytes(hashes_path(t)))).read().column("hash").combine_chunks()
              for t in tasks]
    drops = op.duplicates(hashes)
    decision = Decision(digest, {t.partition.partition_id: list(map(int, d)) for t, d in zip(tasks, drops)})
    rows_in = sum(len(h) for h in hashes)
    rows_out = rows_in - sum(len(d) for d in drops)
    failpoint("dedup_decide")
    storage.put_bytes(path, orjson.dumps({"op_idx": end, "op_name": op.op_name, "params": op.params(),
                                          "rows_in": rows_in, "rows_out": rows_out, "drops": decision.drops},
                                         option=orjson.OPT_NON_STR_KEYS, default=str))
    took = time.perf_counter() - t0
    log.emit(EventType.OP_COMPLETE, op_idx=end, op_name=op.op_name, rows_in=rows_in, rows_out=rows_out,
             duration_s=took, message="global deduplication decided")
    log.emit(EventType.CHECKPOINT_SAVE, op_idx=end, op_name=op.op_name, checkpoint_path=path, rows_out=rows_out,
             message="global deduplication decision")
    return decision
