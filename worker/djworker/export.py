"""Export: one result shard per partition, committed at the end as one output.

Workers encode their partition's result in the export's format (JSON lines or
Parquet) in parallel, so the driver's export of JSONL is a verified byte
concatenation. The output (JSONL, .jsonl.gz or Parquet, from the export path's
suffix) is written under a temporary name and renamed (or, on object storage,
copied server-side) into place, then a manifest is written beside it. A reader
never sees a half-written result, and rows come out in input order because shards
are concatenated by partition id."""
from __future__ import annotations

import io
import os
import time
import uuid
from typing import Any, Iterator, Optional

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from .config import export_format
from .errors import InputError
from .faults import failpoint
from .ops.base import STATS_COLUMN
from .sources import EXTRA_JSON_COLUMN
from .storage import Storage, is_remote


def json_lines(table: pa.Table) -> Iterator[bytes]:
    extra = EXTRA_JSON_COLUMN in table.column_names
    for row in table.to_pylist():
        if extra:
            row.update(orjson.loads(row.pop(EXTRA_JSON_COLUMN)))
        yield orjson.dumps(row, default=str) + b"\n"


def shard_bytes(table: pa.Table, fmt: str, with_stats: bool) -> tuple[bytes, Optional[bytes]]:
    """A partition's result as the user will see it (stats split off), plus its stats lines."""
    stats = None
    if STATS_COLUMN in table.column_names:
        if with_stats:
            stats = b"".join(orjson.dumps(s, default=str) + b"\n" for s in table.column(STATS_COLUMN).to_pylist())
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
    tmp = f"{export_path}.tmp-{uuid.uuid4().hex[:8]}"
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
    manifest = {"job_id": job_id, "path": export_path, "format": fmt, "rows": rows,
                "partitions": len(keys), "committed_at": time.time()}
    if export_stats:
        stats_path = _stats_path(export_path)
        storage.put_bytes(stats_path, b"".join(storage.read_bytes(stats_shard_path(results, k)) for k in keys))
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
