"""Export: one result shard per partition, committed at the end as one output.

The output (JSONL or Parquet, from the export path's suffix) is written under a
temporary name and renamed (or, on object storage, copied server-side) into place,
then a manifest is written beside it. A reader never sees a half-written result,
and rows come out in input order because shards are concatenated by partition id."""
from __future__ import annotations

import io
import os
import posixpath
import time
import uuid
from typing import Any, Iterator, Optional

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from .faults import failpoint
from .ops.base import STATS_COLUMN
from .sources import EXTRA_JSON_COLUMN
from .storage import Storage, is_remote


def export_format(export_path: str) -> str:
    p = export_path.lower()
    if p.endswith(".parquet"):
        return "parquet"
    if p.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz")):
        return "jsonl"
    raise ValueError(f"export_path {export_path!r}: use a .jsonl, .jsonl.gz or .parquet file name")


def json_lines(table: pa.Table) -> Iterator[bytes]:
    extra = EXTRA_JSON_COLUMN in table.column_names
    for row in table.to_pylist():
        if extra:
            row.update(orjson.loads(row.pop(EXTRA_JSON_COLUMN)))
        yield orjson.dumps(row, default=str) + b"\n"


def split_stats(table: pa.Table) -> tuple[pa.Table, Optional[pa.Table]]:
    if STATS_COLUMN not in table.column_names:
        return table, None
    return table.drop_columns([STATS_COLUMN]), table.select([STATS_COLUMN])


def export(storage: Storage, shard_paths: list[str], export_path: str, job_id: str, export_stats: bool = False) -> dict[str, Any]:
    """Concatenate shards (already in partition order) into export_path atomically."""
    fmt = export_format(export_path)
    tmp = f"{export_path}.tmp-{uuid.uuid4().hex[:8]}"
    rows = 0
    stats_lines: list[bytes] = []
    local = not is_remote(export_path)
    if local:
        os.makedirs(os.path.dirname(os.path.abspath(export_path)), exist_ok=True)
    compression = "gzip" if export_path.endswith(".gz") else None
    try:
        with storage.open(tmp, "wb", compression=compression) as out:
            writer = None
            for shard in shard_paths:
                table, stats = split_stats(pq.read_table(storage.open(shard, "rb")))
                if stats is not None and export_stats:
                    stats_lines.extend(orjson.dumps(r[STATS_COLUMN], default=str) + b"\n" for r in stats.to_pylist())
                rows += table.num_rows
                failpoint("export_mid_write")
                if fmt == "jsonl":
                    for chunk in _batched(json_lines(table), 4096):
                        out.write(b"".join(chunk))
                else:
                    table = _expand_extra(table)
                    if writer is None:
                        schema = _unified_schema(storage, shard_paths)
                        writer = pq.ParquetWriter(out, schema, compression="zstd")
                    writer.write_table(_conform(table, writer.schema))
            if writer is not None:
                writer.close()
            elif fmt == "parquet":
                pq.write_table(pa.table({}), out)
        _commit(storage, tmp, export_path)
    finally:
        if storage.exists(tmp):
            storage.remove(tmp)
    manifest = {"job_id": job_id, "path": export_path, "format": fmt, "rows": rows,
                "partitions": len(shard_paths), "committed_at": time.time()}
    if export_stats:
        stats_path = _stats_path(export_path)
        storage.put_bytes(stats_path, b"".join(stats_lines))
        manifest["stats_path"] = stats_path
    storage.put_bytes(export_path + ".manifest.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return manifest


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


def _batched(it: Iterator[bytes], n: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for item in it:
        chunk.append(item)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _expand_extra(table: pa.Table) -> pa.Table:
    if EXTRA_JSON_COLUMN not in table.column_names:
        return table
    return pa.Table.from_pylist([orjson.loads(line) for line in json_lines(table)])


def _unified_schema(storage: Storage, shards: list[str]) -> pa.Schema:
    schemas = []
    for shard in shards:
        schema = pq.read_schema(storage.open(shard, "rb"))
        names = [n for n in schema.names if n not in (STATS_COLUMN, EXTRA_JSON_COLUMN)]
        schemas.append(pa.schema([schema.field(n) for n in names]))
    return pa.unify_schemas(schemas, promote_options="permissive")


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)
