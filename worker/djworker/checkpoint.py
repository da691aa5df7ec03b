"""Checkpoints: which ones to write (policy), what they are called (key), and how
they are written and trusted (atomic, verified on load).

A checkpoint is a data object plus a manifest object written *last*; a checkpoint
without a valid manifest does not exist, so a writer killed mid-write leaves only
garbage that is ignored and overwritten. Loading re-hashes the data and compares
row counts, so a torn or corrupted checkpoint is recomputed, never trusted."""
from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, Optional, Sequence

import orjson
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import xxhash

from .config import Strategy
from .faults import failpoint
from .plan import Partition, partition_name
from .storage import Storage, join

EXTENSIONS = {"parquet": "parquet", "arrow": "arrow", "jsonl": "jsonl"}


# ---- pure core ------------------------------------------------------------
def prefix_hash(ops: Sequence[Any], upto: int, digests: Optional[dict[int, str]] = None) -> str:
    """Hash of ops[:upto] *with their parameters*: an edited op changes every later key.

    A deduplicator's result depends on every partition, so its entry also carries the
    digest of the global decision it applied (`digests[op_idx]`)."""
    digests = digests or {}
    lineage = [[op.op_name, op.params(), digests.get(i)] for i, op in enumerate(ops[:upto])]
    return sha256(json.dumps(lineage, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_key(partition: Partition, ops: Sequence[Any], upto: int, digests: Optional[dict[int, str]] = None) -> str:
    """Names the state after ops[:upto] ran on this input slice."""
    return f"{partition_name(partition.partition_id)}_op{upto:03d}_{partition.fingerprint}_{prefix_hash(ops, upto, digests)}"


def should_checkpoint(strategy: Strategy, op_idx: int, n_ops_total: int, op_name: str,
                      n_ops: int = 1, op_names: Sequence[str] = ()) -> bool:
    """Whether to checkpoint after op number op_idx (0-based) of a partition's pipeline."""
    if strategy == Strategy.every_op:
        return True
    if strategy == Strategy.every_partition:
        return op_idx == n_ops_total - 1
    if strategy == Strategy.every_n_ops:
        return (op_idx + 1) % n_ops == 0
    if strategy == Strategy.manual:
        return op_name in op_names
    return False


# ---- table codecs (shared by checkpoints, intermediate data and export) -------
def encode_table(table: pa.Table, fmt: str, compression: str = "zstd") -> tuple[bytes, Optional[int]]:
    """(bytes, uncompressed size when the format needs it to decode) — a faithful round trip."""
    buf = io.BytesIO()
    codec = None if compression == "none" else compression
    if fmt == "parquet":
        pq.write_table(table, buf, compression=codec or "none")
        return buf.getvalue(), None
    if fmt == "arrow":
        # Arrow IPC supports lz4/zstd only; snappy/gzip fall back to zstd.
        feather.write_feather(table, buf, compression="uncompressed" if codec is None else "zstd")
        return buf.getvalue(), None
    if fmt != "jsonl":
        raise ValueError(f"unknown format {fmt!r}")
    out = b"".join(orjson.dumps(row, default=str) + b"\n" for row in table.to_pylist())
    if codec == "gzip":
        import gzip
        return gzip.compress(out, mtime=0), None
    if codec in ("zstd", "snappy"):
        return pa.compress(out, codec=codec, asbytes=True), len(out)
    return out, None


def decode_table(data: bytes, fmt: str, schema: Optional[pa.Schema] = None, compression: str = "zstd",
                 raw_size: Optional[int] = None) -> pa.Table:
    if fmt == "parquet":
        return pq.ParquetFile(io.BytesIO(data)).read()  # read_table would import pyarrow.dataset and pandas
    if fmt == "arrow":
        return feather.read_table(io.BytesIO(data))
    if compression == "gzip":
        import gzip
        data = gzip.decompress(data)
    elif compression in ("zstd", "snappy") and raw_size is not None:
        data = pa.decompress(data, decompressed_size=raw_size, codec=compression, asbytes=True)
    rows = [orjson.loads(line) for line in data.splitlines() if line]
    if schema is not None:
        return pa.Table.from_pylist(rows, schema=schema)
    return pa.Table.from_pylist(rows)


def schema_b64(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def schema_from_b64(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def manifest_name(key: str) -> str:
    """A checkpoint exists exactly when this file does (it is written last)."""
    return f"checkpoint_{key}.json"


# ---- shell: write, find, verify -------------------------------------------
@dataclass
class Checkpoints:
    """Checkpoints of one job under {checkpoint_dir}/{job_id}/."""

    storage: Storage
    root: str
    fmt: str = "parquet"
    compression: str = "zstd"

    def manifest_path(self, key: str) -> str:
        return join(self.root, manifest_name(key))

    def data_path(self, key: str) -> str:
        return join(self.root, f"{key}.{EXTENSIONS[self.fmt]}")

    def write(self, key: str, table: pa.Table, partition_id: int, upto: int, op_names: list[str]) -> str:
        """Data first, manifest last; returns the manifest path."""
        data, raw_size = encode_table(table, self.fmt, self.compression)
        return self.write_encoded(key, data, table.num_rows, table.schema, partition_id, upto, op_names, raw_size)

    def write_encoded(self, key: str, data: bytes, rows: int, schema: pa.Schema, partition_id: int, upto: int,
                      op_names: list[str], raw_size: Optional[int] = None) -> str:
        self.storage.put_bytes(self.data_path(key), data)
        failpoint("checkpoint_mid_write")
        manifest = {
            "key": key, "partition_id": partition_id, "upto": upto, "op_names": op_names,
            "rows": rows, "content_hash": xxhash.xxh3_128(data).hexdigest(), "bytes": len(data),
            "format": self.fmt, "compression": self.compression, "raw_size": raw_size,
            "data_path": self.data_path(key), "schema": schema_b64(schema), "created_at": time.time(),
        }
        path = self.manifest_path(key)
        self.storage.put_bytes(path, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        return path

    def keys_for(self, partition_id: int) -> set[str]:
        """Keys with a manifest for this partition (one listing; data is verified on load)."""
        prefix = f"checkpoint_{partition_name(partition_id)}_"
        return {n[len("checkpoint_"):-len(".json")] for n in self.storage.listdir(self.root, prefix) if n.endswith(".json")}

    def verified_bytes(self, key: str) -> bytes:
        """The data of a checkpoint whose content hash matches its manifest, else ValueError."""
        manifest = orjson.loads(self.storage.read_bytes(self.manifest_path(key)))
        data = self.storage.read_bytes(manifest["data_path"])
        if len(data) != manifest["bytes"] or xxhash.xxh3_128(data).hexdigest() != manifest["content_hash"]:
            raise ValueError(f"{manifest['data_path']}: content hash mismatch (torn or corrupted data)")
        return data

    def load(self, key: str) -> tuple[Optional[pa.Table], Optional[str]]:
        """(table, None) for a verified checkpoint, or (None, why it cannot be trusted)."""
        try:
            manifest = orjson.loads(self.storage.read_bytes(self.manifest_path(key)))
            data = self.storage.read_bytes(manifest["data_path"])
        except FileNotFoundError as err:
            return None, f"missing file: {err}"
        except orjson.JSONDecodeError as err:
            return None, f"unreadable manifest: {err}"
        if len(data) != manifest["bytes"] or xxhash.xxh3_128(data).hexdigest() != manifest["content_hash"]:
            return None, "content hash mismatch (torn or corrupted data)"
        try:
            table = decode_table(data, manifest["format"], schema_from_b64(manifest["schema"]),
                                 manifest.get("compression", "none"), manifest.get("raw_size"))
        except Exception as err:  # a verified hash makes this unlikely; still never trust it
            return None, f"undecodable data: {err}"
        if table.num_rows != manifest["rows"]:
            return None, f"row count {table.num_rows} != manifest {manifest['rows']}"
        return table, None

    def discard(self, key: str) -> None:
        self.storage.remove(self.manifest_path(key))
        self.storage.remove(self.data_path(key))
