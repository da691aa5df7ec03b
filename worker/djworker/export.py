"""Export: one result shard per partition, committed at the end as one output.

Workers encode their partition's result in the export's format (JSON lines or
Parquet) in parallel, so the driver's export of JSONL is a verified byte
concatenation. The output (JSONL, .jsonl.gz or Parquet, from the export path's
suffix) is written under a temporary name and renamed (or, on object storage,
copied server-side) into place, then a manifest is written beside it. A reader
never sees a half-written result, and rows come out in input order because shards
are concatenated by partition id.

A local, uncompressed JSONL export is streamed instead (StreamingExport): shards are
appended in partition order while the job still runs, so the end of a job, and of
a resumed one, is a rename rather than a copy of every shard.

Over 300 lines: the batch export and the streaming export share the shard format, the
verification and the commit (temporary name, rename, manifest); one module keeps that contract in one place."""
from __future__ import annotations

import io
import os
import posixpath
import re
import threading
import time
from typing import Any, Iterator, Optional

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from .config import export_format
from .errors import InputError
from .faults import failpoint
from .ops.base import STATS_COLUMN
from .sources import EXTRA_JSON_COLUMN
from .storage import Storage, is_remote, temp_path


def json_lines(table: pa.Table) -> Iterator[bytes]:
    extra = EXTRA_JSON_COLUMN in table.column_names
    for row in table.to_pylist():
        if extra:
            row.update(orjson.loads(row.pop(EXTRA_JSON_COLUMN)))
        yield orjson.dumps(row, default=str) + b"\n"


def shard_bytes(table: pa.Table, fmt: str, with_stats: bool, keep_stats: bool = False) -> tuple[bytes, Optional[bytes]]:
    """A partition's result as the user will see it (stats split off unless keep_stats, as
    DataJuicer's keep_stats_in_res_ds), plus its stats lines."""
    stats = None
    if STATS_COLUMN in table.column_names:
        if with_stats:
            stats = b"".join(orjson.dumps(s, default=str) + b"\n" for s in table.column(STATS_COLUMN).to_pylist())
        if not keep_stats:
            table = table.drop_columns([STATS_COLUMN])
    elif with_stats:
        stats = b"{}\n" * table.num_rows
    if fmt == "jsonl":
        return b"".join(json_lines(table)), stats
    buf = io.BytesIO()
    pq.write_table(_expand_extra(table), buf, compression="zstd")
    return buf.getvalue(), stats


def stats_shard_path(results: Any, key: str) -> str:
    return results.data_path(key) + ".stats.jsonl"


def export(storage: Storage, results: Any, keys: list[str], export_path: str, job_id: str,
           export_stats: bool = False) -> dict[str, Any]:
    """Concatenate verified shards (in partition order) into export_path atomically."""
    fmt = export_format(export_path)
    tmp = temp_path(export_path)
    rows = 0
    if not is_remote(export_path):
        os.makedirs(os.path.dirname(os.path.abspath(export_path)), exist_ok=True)
    compression = "gzip" if export_path.endswith(".gz") else None
    try:
        with storage.open(tmp, "wb", compression=compression) as out:
            writer = None
            for key in keys:
                data = results.verified_bytes(key)
                failpoint("export_mid_write")
                if fmt == "jsonl":
                    out.write(data)
                    rows += data.count(b"\n")
                    continue
                table = pq.ParquetFile(io.BytesIO(data)).read()
                rows += table.num_rows
                if writer is None:
                    writer = pq.ParquetWriter(out, _unified_schema(storage, results, keys), compression="zstd")
                writer.write_table(_conform(table, writer.schema))
            if writer is not None:
                writer.close()
            elif fmt == "parquet":
                pq.write_table(pa.table({}), out)
        _commit(storage, tmp, export_path)
    finally:
        if storage.exists(tmp):
            storage.remove(tmp)
    return _write_manifest(storage, results, keys, export_path, job_id, fmt, rows, export_stats)


def _write_manifest(storage: Storage, results: Any, keys: list[str], export_path: str, job_id: str, fmt: str,
                    rows: int, export_stats: bool, extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    manifest = {"job_id": job_id, "path": export_path, "format": fmt, "rows": rows,
                "partitions": len(keys), "committed_at": time.time(), **(extra or {})}
    if export_stats:
        stats_path = _stats_path(export_path)
        storage.put_bytes(stats_path, b"".join(storage.read_bytes(stats_shard_path(results, k)) for k in keys))
        manifest["stats_path"] = stats_path
    storage.put_bytes(export_path + ".manifest.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return manifest


def shard_paths(export_path: str, count: int) -> list[str]:
    """DataJuicer's shard names: <dir>/<name>-<i>-of-<n>.<suffix>, numbers zero-padded alike."""
    head, _, base = export_path.rpartition("/")
    stem, suffix = base.split(".", 1) if "." in base else (base, "jsonl")
    fmt = f"%0{len(str(count)) + 1}d"
    return [f"{head + '/' if head else ''}{stem}-{fmt % i}-of-{fmt % count}.{suffix}" for i in range(count)]


def is_shard_name(name: str, export_path: str) -> bool:
    """Whether a file name is one of export_path's shards (any count), finished or not."""
    stem = posixpath.basename(export_path).split(".", 1)[0]
    return re.match(rf"{re.escape(stem)}-\d+-of-\d+\.", posixpath.basename(name)) is not None


def _split_jsonl(data: bytes, limit: int) -> Iterator[bytes]:
    """Line-aligned pieces of at most `limit` bytes (a single longer line is its own piece)."""
    start = 0
    while start < len(data):
        end = start + limit
        if end >= len(data):
            yield data[start:]
            return
        cut = data.rfind(b"\n", start, end) + 1
        if cut <= start:
            cut = data.find(b"\n", end) + 1 or len(data)
        yield data[start:cut]
        start = cut


def export_sharded(storage: Storage, results: Any, keys: list[str], export_path: str, job_id: str,
                   shard_size: int, export_stats: bool = False) -> dict[str, Any]:
    """export_shard_size: rows in input order across files of about shard_size bytes each.

    JSON lines are cut at line boundaries; Parquet files hold whole partitions (a partition
    bigger than shard_size is one file). Every file is written under a temporary name first
    and renamed only when all are complete; the manifest, written last, lists them. A resumed
    run rewrites the same names with the same bytes, and removes files a previous manifest of
    this export listed that this one does not, so no stale shard survives."""
    fmt = export_format(export_path)
    if export_path.endswith(".gz"):
        raise InputError(f"export_path {export_path!r}: a sharded export (export_shard_size) is written uncompressed; "
                         "drop the .gz suffix or set export_shard_size: 0")
    groups: list[list[bytes]] = [[]]
    size = 0
    for key in keys:
        data = results.verified_bytes(key)
        pieces = list(_split_jsonl(data, shard_size)) if fmt == "jsonl" else [data]
        for piece in pieces:
            if groups[-1] and size + len(piece) > shard_size:
                groups.append([])
                size = 0
            groups[-1].append(piece)
            size += len(piece)
    paths = shard_paths(export_path, len(groups))
    if not is_remote(export_path):
        os.makedirs(os.path.dirname(os.path.abspath(export_path)), exist_ok=True)
    temps = [temp_path(p) for p in paths]
    rows = 0
    try:
        for group, tmp in zip(groups, temps):
            failpoint("export_mid_write")
            with storage.open(tmp, "wb") as out:
                if fmt == "jsonl":
                    for piece in group:
                        out.write(piece)
                        rows += piece.count(b"\n")
                    continue
                tables = [pq.ParquetFile(io.BytesIO(piece)).read() for piece in group]
                schema = pa.unify_schemas([t.schema for t in tables], promote_options="permissive") if tables \
                    else pa.schema([])
                with pq.ParquetWriter(out, schema, compression="zstd") as writer:
                    for table in tables:
                        rows += table.num_rows
                        writer.write_table(_conform(table, schema))
        for tmp, final in zip(temps, paths):
            _commit(storage, tmp, final)
    finally:
        for tmp in temps:
            if storage.exists(tmp):
                storage.remove(tmp)
    _remove_stale_shards(storage, export_path, paths)
    manifest = _write_manifest(storage, results, keys, export_path, job_id, fmt, rows, export_stats,
                               extra={"shards": paths, "export_shard_size": shard_size})
    return manifest


def _remove_stale_shards(storage: Storage, export_path: str, keep: list[str]) -> None:
    try:
        old = orjson.loads(storage.read_bytes(export_path + ".manifest.json")).get("shards") or []
    except (FileNotFoundError, OSError, orjson.JSONDecodeError):
        return
    for path in old:
        if path not in keep and storage.exists(path):
            storage.remove(path)


def can_stream(export_path: str) -> bool:
    """Appending in place needs a local file whose bytes are plain concatenations of shards."""
    return bool(export_path) and not is_remote(export_path) and export_format(export_path) == "jsonl" \
        and not export_path.endswith(".gz")


def partial_export_paths(export_path: str, job_id: str) -> list[str]:
    """A streamed export in progress: the partial output and its sidecar."""
    partial = f"{export_path}.partial-{job_id}"
    return [partial, partial + ".json"]


class StreamingExport:
    """Appends verified JSONL shards, in partition order, to a partial file beside the
    output as partitions finish; `finish` renames it into place.

    A sidecar records which shards the partial holds and its length after them. It is
    written after the appended bytes are synced, so a run killed mid-append leaves at
    most a torn tail past the recorded length, which the next run truncates away. A
    sidecar whose shards are not a prefix of this run's (a changed recipe) is ignored."""

    def __init__(self, storage: Storage, results: Any, keys: list[str], export_path: str, job_id: str):
        self.storage, self.results, self.keys = storage, results, keys
        self.export_path, self.job_id = export_path, job_id
        self.partial, self.sidecar = partial_export_paths(export_path, job_id)
        self.index = {key: i for i, key in enumerate(keys)}
        self.ready: set[int] = set()
        self.error: Optional[BaseException] = None
        self.closing = False
        self.cond = threading.Condition()
        os.makedirs(os.path.dirname(os.path.abspath(export_path)), exist_ok=True)
        self.held, self.offset, self.rows = self._recover()
        self.reused = self.held  # shards an earlier run of this job already appended
        self.fh = open(self.partial, "r+b" if self.held else "wb")
        self.fh.truncate(self.offset)
        self.fh.seek(self.offset)
        self.thread = threading.Thread(target=self._append_loop, name="dj-export", daemon=True)
        self.thread.start()

    def _recover(self) -> tuple[int, int, int]:
        """(shards held, bytes, rows) that a previous run of this job appended and recorded."""
        try:
            with open(self.sidecar, "rb") as fh:
                state = orjson.loads(fh.read())
            held, size = state["keys"], state["bytes"]
            if held == self.keys[: len(held)] and os.path.getsize(self.partial) >= size:
                return len(held), size, state["rows"]
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
            pass
        return 0, 0, 0

    def mark_ready(self, key: str) -> None:
        """This shard is committed and may be appended once all before it are."""
        with self.cond:
            self.ready.add(self.index[key])
            self.cond.notify()

    def _append_loop(self) -> None:
        try:
            while True:
                with self.cond:
                    while self.held not in self.ready and not self.closing:
                        self.cond.wait()
                    if self.held not in self.ready:
                        return
                data = self.results.verified_bytes(self.keys[self.held])
                self.fh.write(data)
                failpoint("export_mid_write")
                self.fh.flush()
                os.fsync(self.fh.fileno())
                self.held, self.offset, self.rows = self.held + 1, self.offset + len(data), self.rows + data.count(b"\n")
                self.storage.put_bytes(self.sidecar, orjson.dumps(
                    {"job_id": self.job_id, "keys": self.keys[: self.held], "bytes": self.offset, "rows": self.rows}))
        except BaseException as err:  # noqa: BLE001 - reported by finish(); the partial stays resumable
            self.error = err

    def close(self) -> None:
        """Stop appending (after the shard in hand); the partial and sidecar stay for a resume."""
        with self.cond:
            self.closing = True
            self.cond.notify()
        self.thread.join()
        self.fh.close()

    def finish(self, export_stats: bool = False) -> dict[str, Any]:
        """Append what is left, then rename the partial into place and write the manifest."""
        for key in self.keys:
            self.mark_ready(key)
        self.close()
        if self.error is not None:
            raise self.error
        os.replace(self.partial, self.export_path)
        if os.path.exists(self.sidecar):
            os.remove(self.sidecar)
        return _write_manifest(self.storage, self.results, self.keys, self.export_path, self.job_id, "jsonl",
                               self.rows, export_stats)


def _stats_path(export_path: str) -> str:
    """DataJuicer writes stats beside the result as <stem>_stats.jsonl."""
    base = export_path
    for suffix in (".jsonl.gz", ".json.gz", ".jsonl", ".json", ".parquet"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base + "_stats.jsonl"


def _commit(storage: Storage, tmp: str, final: str) -> None:
    if is_remote(final):
        fs = storage.fs(final)
        fs.copy(tmp.split("://", 1)[1], final.split("://", 1)[1])  # server-side: the object appears whole
    else:
        os.replace(tmp, final)


def _expand_extra(table: pa.Table) -> pa.Table:
    if EXTRA_JSON_COLUMN not in table.column_names:
        return table
    rows = [orjson.loads(line) for line in json_lines(table)]
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as err:
        raise InputError(f"cannot export to Parquet: field {_untypable_field(rows)!r} has values that fit no one Parquet "
                         f"type ({err}); export to .jsonl, which keeps any JSON value exactly, or make the field's type "
                         "consistent") from None


def _untypable_field(rows: list[dict[str, Any]]) -> str:
    for key in dict.fromkeys(k for row in rows for k in row):
        try:
            pa.array([row.get(key) for row in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return key
    return "?"


def _unified_schema(storage: Storage, results: Any, keys: list[str]) -> pa.Schema:
    schemas = [pq.read_schema(storage.open(results.data_path(k), "rb")) for k in keys]
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:  # e.g. a field that is int in one partition, text in another
        raise InputError(f"cannot export to Parquet: {err}; export to .jsonl, which keeps any JSON value exactly, "
                         "or make the field's type consistent") from None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)
