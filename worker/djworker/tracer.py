"""DataJuicer's tracer (`open_tracer`): per op, up to `trace_num` samples it changed, removed or found duplicate.

DataJuicer writes `{work_dir}/trace/sample_trace-{op}.jsonl` (its work_dir ends with the job id,
like this engine's job directory) for mappers (samples whose text
changed: the `trace_keys` fields of the original sample, then `original_text`, `processed_text`)
and filters (each removed sample, whole, stats included), and `duplicate-{op}.jsonl` for
deduplicators (`dup1`, `dup2`: a kept sample and its first duplicate). `op_list_to_trace`
empty traces every op.

Here partitions run apart and may be resumed, so the trace is collected in pieces and
merged once: each partition keeps its first `trace_num` records per op beside every
checkpoint it writes (`trace_{key}_{settings}.json`, so a resume from that checkpoint
carries the records of the ops it skips), the dedup stage keeps its pairs beside its
decision, and the job's end concatenates them in recipe order, then partition order, then
row order, and keeps the first `trace_num` per file. The result is the first records in
input order, whatever the executor, `np` or interruptions (DataJuicer's own order depends
on its worker processes). The record builders are pure; `Collector`, `dedup_records` and
`write_trace` are the shells."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any, Callable, Optional, Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .ops.base import Deduplicator, Filter, Mapper
from .storage import Storage, join

TRACE_DIR = "trace"
TRACE_FILE = {"mapper": "sample_trace-{}.jsonl", "filter": "sample_trace-{}.jsonl", "dedup": "duplicate-{}.jsonl"}
# Every name DataJuicer's tracer has written; a run's trace directory holds only its own files.
_STALE_PREFIXES = ("sample_trace-", "duplicate-", "mapper-", "filter-")


@dataclass(frozen=True)
class TraceSettings:
    """open_tracer's settings, as every partition task carries them (picklable)."""

    ops: tuple[str, ...] = ()  # op_list_to_trace: empty traces every op
    limit: int = 10  # trace_num
    keys: tuple[str, ...] = ()  # trace_keys

    @classmethod
    def of(cls, recipe: Any) -> Optional["TraceSettings"]:
        """None when open_tracer is off: then nothing anywhere looks at rows for the trace."""
        if not recipe.open_tracer:
            return None
        return cls(tuple(recipe.op_list_to_trace), recipe.trace_num, tuple(recipe.trace_keys))

    def traces(self, op_name: str) -> bool:
        return not self.ops or op_name in self.ops

    @property
    def digest(self) -> str:
        """Names the saved pieces: records kept under other settings are never reused."""
        basis = orjson.dumps([sorted(set(self.ops)), self.limit, list(self.keys)])
        return sha256(basis).hexdigest()[:12]


def op_kind(op: Any) -> Optional[str]:
    """mapper, filter or dedup: what the tracer records for this op (None: not traced)."""
    if isinstance(op, Deduplicator):
        return "dedup"
    if isinstance(op, Filter):
        # A filter that overrides process may not be judge-then-filter; it is not traced.
        return "filter" if type(op).process is Filter.process else None
    if isinstance(op, Mapper):
        return "mapper"
    if getattr(op, "dj_name", None):  # DataJuicer's own mappers, run through the adapter
        from data_juicer.ops.base_op import Mapper as DJMapper

        return "mapper" if isinstance(op.instance(), DJMapper) else None
    return None


def file_name(op: Any) -> str:
    return TRACE_FILE[op_kind(op)].format(op.op_name)


# ---- core: records from one op's input and output --------------------------------------


def _column(table: pa.Table, name: str) -> Optional[pa.ChunkedArray]:
    return table.column(name) if name in table.column_names else None


def mapper_records(before: pa.Table, after: pa.Table, text_key: str, keys: Sequence[str],
                   limit: int) -> list[dict[str, Any]]:
    """The first `limit` rows whose text the mapper changed, as DataJuicer records them.

    A mapper that changes the row count (one sample into several) has no row-to-row
    comparison, so it gives none."""
    if limit <= 0 or before.num_rows != after.num_rows:
        return []
    old, new = _column(before, text_key), _column(after, text_key)
    if old is None or new is None:
        return []
    same = pc.fill_null(pc.equal(old, new), False)
    both_null = pc.and_(pc.is_null(old), pc.is_null(new))
    changed = np.flatnonzero(pc.invert(pc.or_(same, both_null)).to_numpy(zero_copy_only=False))[:limit]
    if not len(changed):
        return []
    take = pa.array(changed)
    extra = {k: (c.take(take).to_pylist() if (c := _column(before, k)) is not None else [None] * len(changed))
             for k in keys}
    old_texts, new_texts = old.take(take).to_pylist(), new.take(take).to_pylist()
    records = []
    for i in range(len(changed)):
        record = {k: extra[k][i] for k in keys}
        record.update(original_text=old_texts[i], processed_text=new_texts[i])  # these win over trace_keys
        records.append(record)
    return records


def filter_records(judged: pa.Table, keep: pa.Array, limit: int) -> list[dict[str, Any]]:
    """The first `limit` rows the filter removes, whole, with the stats it computed."""
    if limit <= 0:
        return []
    removed = np.flatnonzero(~keep.to_numpy(zero_copy_only=False))[:limit]
    return judged.take(pa.array(removed, pa.int64())).to_pylist() if len(removed) else []


def duplicate_pairs(groups: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """(kept row, duplicate row) global positions: one pair per duplicate group, groups in the
    order of their first duplicate, at most `limit` (DataJuicer's MinHash tracer's choice)."""
    pairs: list[tuple[int, int]] = []
    seen: set[int] = set()
    for row in np.flatnonzero(groups != np.arange(len(groups))):
        first = int(groups[row])
        if first not in seen:
            seen.add(first)
            pairs.append((first, int(row)))
            if len(pairs) >= limit:
                break
    return pairs


def locate(position: int, sizes: Sequence[int]) -> tuple[int, int]:
    """A global row position as (index of its partition among `sizes`, position inside it)."""
    ends = np.cumsum(sizes)
    part = int(np.searchsorted(ends, position, side="right"))
    return part, position - (int(ends[part - 1]) if part else 0)


def merged(ops: Sequence[Any], pieces: Sequence[dict[int, list]], limit: int) -> dict[str, list[dict[str, Any]]]:
    """File name -> records: ops in recipe order, each op's pieces in partition order, first `limit`.

    Two ops of one name share a file and its bound, as in DataJuicer."""
    files: dict[str, list[dict[str, Any]]] = {}
    for idx, op in enumerate(ops):
        for piece in pieces:
            records = piece.get(idx, [])
            if records:
                name = file_name(op)
                files[name] = (files.get(name, []) + records)[:limit]
    return files


def jsonl(records: list[dict[str, Any]]) -> bytes:
    """One compact JSON object per line, non-ASCII kept (DataJuicer writes force_ascii=False)."""
    return b"".join(orjson.dumps(r, default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n" for r in records)


# ---- shell: a partition's records, saved with its checkpoints ---------------------------


def piece_path(checkpoint_root: str, key: str, settings: TraceSettings) -> str:
    """The records of the ops before the state `key` names, kept beside that state."""
    return join(checkpoint_root, f"trace_{key}_{settings.digest}.json")


def load_piece(storage: Storage, path: str) -> Optional[tuple[dict[int, list], bool]]:
    """(records per op index, incomplete), or None when there is none."""
    try:
        saved = orjson.loads(storage.read_bytes(path))
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None  # none (traced under other settings, or never), or torn by a killed writer
    return {int(k): v for k, v in saved["ops"].items()}, bool(saved.get("incomplete"))


@dataclass
class Collector:
    """One partition's trace records per op index, bounded by the limit per op."""

    settings: TraceSettings
    records: dict[int, list] = field(default_factory=dict)
    # resumed from a state saved without these settings: the ops before it have no records
    incomplete: bool = False

    @classmethod
    def resumed(cls, storage: Storage, settings: TraceSettings, checkpoint_root: str,
                key: Optional[str]) -> "Collector":
        """Fresh at the input slice; from a checkpoint, with the records saved beside it."""
        if key is None:
            return cls(settings)
        piece = load_piece(storage, piece_path(checkpoint_root, key, settings))
        return cls(settings, incomplete=True) if piece is None else cls(settings, *piece)

    def save(self, storage: Storage, checkpoint_root: str, key: str) -> None:
        """Written before the state it goes with, so a state never exists without its records."""
        data = {"ops": {str(k): v for k, v in sorted(self.records.items())}, "incomplete": self.incomplete}
        storage.put_bytes(piece_path(checkpoint_root, key, self.settings),
                          orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS))

    def process(self, idx: int, op: Any) -> Optional[Callable[[pa.Table], pa.Table]]:
        """The op's process, recording as it goes; None when this op is not traced."""
        kind = op_kind(op) if self.settings.traces(op.op_name) else None
        if kind not in ("mapper", "filter"):
            return None
        sink = self.records.setdefault(idx, [])
        limit = self.settings.limit

        def traced_mapper(table: pa.Table) -> pa.Table:
            out = op.process(table)
            if len(sink) < limit:
                sink.extend(mapper_records(table, out, op.text_key, self.settings.keys, limit - len(sink)))
            return out

        def traced_filter(table: pa.Table) -> pa.Table:
            judged, keep = op.judge(table)
            if len(sink) < limit:
                sink.extend(filter_records(judged, keep, limit - len(sink)))
            return judged.filter(keep)

        return traced_mapper if kind == "mapper" else traced_filter


# ---- shell: the dedup stage's pairs and the job's trace files ---------------------------


def dedup_records(storage: Storage, tasks: Sequence[Any], digest: str, settings: TraceSettings,
                  hashes_path: Callable[[Any], str]) -> list[dict]:
    """The duplicate pairs of the deduplicator at the tasks' end, saved beside its decision.

    The pairs' rows are read from each partition's state before the deduplicator (its
    checkpoint, or its input slice when the deduplicator is the first op); only partitions
    holding a traced row are read. `hashes_path` names a task's row keys (run.py's; passed in,
    since run.py imports this module)."""
    from .checkpoint import Checkpoints, read_partition

    first = tasks[0]
    end, op = first.stop_at, first.ops[first.stop_at]
    if op_kind(op) != "dedup" or not settings.traces(op.op_name) or settings.limit <= 0:
        return []  # other global ops (selectors) are not traced, as in DataJuicer
    path = join(first.checkpoint_root, f"trace_dedup_op{end:03d}_{digest}_{settings.digest}.json")
    try:
        return orjson.loads(storage.read_bytes(path))
    except (FileNotFoundError, orjson.JSONDecodeError):
        pass
    hashes = [pq.ParquetFile(pa.BufferReader(storage.read_bytes(hashes_path(t)))).read().column("hash").combine_chunks()
              for t in tasks]
    pairs = duplicate_pairs(op.groups(hashes), settings.limit)
    sizes = [len(h) for h in hashes]
    states: dict[int, pa.Table] = {}

    def row(position: int) -> dict[str, Any]:
        part, offset = locate(position, sizes)
        if part not in states:
            task = tasks[part]
            if end == 0:
                states[part] = read_partition(storage, task.partition.path)
            else:
                table, problem = Checkpoints(storage, task.checkpoint_root, task.fmt, task.compression).load(
                    task.key(end))
                if table is None:
                    raise RuntimeError(f"tracer: partition {task.partition.partition_id}'s state before "
                                       f"{op.op_name} cannot be read: {problem}")
                states[part] = table
        return states[part].slice(offset, 1).to_pylist()[0]

    records = [{"dup1": row(a), "dup2": row(b)} for a, b in pairs]
    storage.put_bytes(path, orjson.dumps(records, default=str, option=orjson.OPT_NON_STR_KEYS))
    return records


def job_records(storage: Storage, tasks: Sequence[Any], settings: TraceSettings,
                dedups: dict[int, list]) -> tuple[list[dict[int, list]], list[int]]:
    """Every partition's saved records (in partition order) plus the dedup pairs, and the ids of
    partitions whose records are incomplete (some ops ran before these trace settings were set)."""
    pieces, missing = [], []
    for task in tasks:
        records, incomplete = load_piece(storage, piece_path(task.checkpoint_root, task.key(len(task.ops)),
                                                             settings)) or ({}, True)
        if incomplete:
            missing.append(task.partition.partition_id)
        pieces.append(records)
    return pieces + [dict(dedups)], missing


def write_trace(storage: Storage, job_dir: str, files: dict[str, list[dict[str, Any]]]) -> list[str]:
    """{job_dir}/trace/<file> for each file; tracer files an earlier run left are removed, as DataJuicer does."""
    root = join(job_dir, TRACE_DIR)
    storage.makedirs(root)
    for name in storage.listdir(root):
        base = posixpath.basename(name.rstrip("/"))
        if base.startswith(_STALE_PREFIXES) and base.endswith(".jsonl") and base not in files:
            storage.remove(join(root, base))
    written = []
    for name, records in sorted(files.items()):
        storage.put_bytes(join(root, name), jsonl(records))
        written.append(join(root, name))
    return written
