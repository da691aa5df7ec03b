"""Checkpoints: which ones to write (policy), what they are called (key), and how
they are written and trusted (atomic, verified on load).

A checkpoint is a data object plus a manifest object written *last*; a checkpoint
without a valid manifest does not exist, so a writer killed mid-write leaves only
garbage that is ignored and overwritten. Loading re-hashes the data and compares
row counts, so a torn or corrupted checkpoint is recomputed, never trusted."""
from __future__ import annotations

import base64
import gzip
import io
import json
import time
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, Iterable, NamedTuple, Optional, Sequence, Union

import orjson
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import xxhash

from .config import Strategy
from .faults import failpoint
from .plan import Partition, partition_name
from .sources import lines_table
from .storage import Storage, join, local_path

JSONL_SUFFIXES = {"none": "jsonl", "gzip": "jsonl.gz", "zstd": "jsonl.zst"}


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


# ---- table codecs (shared by checkpoints, partitions, intermediate data and export) ----
class Codec(NamedTuple):
    """How a (format, requested compression) pair is really stored."""

    compression: str  # the codec the bytes use: what manifests record
    suffix: str  # file name suffix without the leading dot
    note: Optional[str] = None  # why compression differs from the request


def resolve_codec(fmt: str, compression: str) -> Codec:
    """The codec and suffix a file of this format gets when `compression` is asked for.

    Arrow IPC only knows zstd and lz4, and snappy has no standard file framing (a
    .jsonl.* file must open with gzip -d or zstdcat), so those requests become zstd."""
    if fmt == "parquet":
        return Codec(compression, "parquet")
    if fmt == "arrow":
        if compression in ("zstd", "none"):
            return Codec(compression, "arrow")
        return Codec("zstd", "arrow", f"intermediate_storage: Arrow IPC files cannot use {compression}, so they are "
                                      "written with zstd; set compression to zstd or none to choose explicitly")
    if fmt != "jsonl":
        raise ValueError(f"unknown format {fmt!r}")
    if compression == "snappy":
        return Codec("zstd", JSONL_SUFFIXES["zstd"], "intermediate_storage: snappy has no standard file format for "
                     "JSON lines, so they are written as zstd (.jsonl.zst); set compression to zstd, gzip or none "
                     "to choose explicitly")
    return Codec(compression, JSONL_SUFFIXES[compression])


def compression_note(fmt: str, compression: str) -> Optional[str]:
    """What a job start should warn about: the codec actually used instead of the requested one."""
    return resolve_codec(fmt, compression).note


def format_of(path: str) -> tuple[str, str]:
    """(format, codec) of a file this module wrote, from its suffix alone (Parquet and
    Arrow files carry their codec inside, so "none" is enough to decode them)."""
    for codec, suffix in JSONL_SUFFIXES.items():
        if path.endswith("." + suffix):
            return "jsonl", codec
    for fmt in ("parquet", "arrow"):
        if path.endswith("." + fmt):
            return fmt, "none"
    raise ValueError(f"{path}: not a .parquet, .arrow or .jsonl[.gz|.zst] file")


def encode_table(table: pa.Table, fmt: str, compression: str = "zstd") -> bytes:
    """The table in fmt, with the codec resolve_codec picks: a faithful round trip through decode_table."""
    codec = resolve_codec(fmt, compression).compression
    if fmt == "jsonl":
        return compressed(b"".join(orjson.dumps(row, default=str) + b"\n" for row in table.to_pylist()), codec)
    buf = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, buf, compression=codec)
    else:
        feather.write_feather(table, buf, compression="uncompressed" if codec == "none" else codec)
    return buf.getvalue()


def compressed(data: bytes, codec: str) -> bytes:
    """data as a standard .gz or .zst file (zstd frames carry no size: zstdcat reads them)."""
    if codec == "none":
        return data
    if codec == "gzip":
        return gzip.compress(data, mtime=0)  # mtime=0: the same rows give the same bytes
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, codec) as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


Data = Union[bytes, pa.Buffer]


def decode_table(data: Data, fmt: str, schema: Optional[pa.Schema] = None, compression: str = "none",
                 raw_size: Optional[int] = None) -> pa.Table:
    """The table in data. JSON lines without a schema (partition slices) are typed the way planning
    typed them, so a partition reads back the same whatever the intermediate format."""
    if fmt == "parquet":
        return pq.ParquetFile(pa.BufferReader(data)).read()  # read_table would import pyarrow.dataset and pandas
    if fmt == "arrow":
        return pa.ipc.open_file(pa.BufferReader(data)).read_all()  # zero-copy over a mapped buffer
    if raw_size is not None:  # a checkpoint written before .jsonl.zst: a raw block that needs its size
        data = pa.decompress(data, decompressed_size=raw_size, codec=compression, asbytes=True)
    elif compression != "none":
        data = pa.CompressedInputStream(pa.BufferReader(data), compression).read()
    lines = [line for line in bytes(data).split(b"\n") if line]
    if schema is None:
        return lines_table(lines)
    return pa.Table.from_pylist([orjson.loads(line) for line in lines], schema=schema)


def read_data(storage: Storage, path: str, fmt: str, memory_map: bool = False) -> Data:
    """A data file's bytes. A local Arrow file is memory-mapped when asked, so its uncompressed
    columns are used in place, never copied into memory."""
    local = local_path(path)
    if memory_map and fmt == "arrow" and local is not None:
        with pa.memory_map(local) as mapped:
            return mapped.read_buffer()  # the buffer keeps the mapping alive after close
    return storage.read_bytes(path)


def read_partition(storage: Storage, path: str, memory_map: bool = False) -> pa.Table:
    """A planned input slice, read by its suffix: a resumed job may have planned in another format."""
    fmt, codec = format_of(path)
    return decode_table(read_data(storage, path, fmt, memory_map), fmt, compression=codec)


def schema_b64(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def schema_from_b64(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def keys_by_partition(names: Iterable[str]) -> dict[int, set[str]]:
    """Checkpoint keys per partition id, from a listing of a checkpoint directory (manifests only)."""
    keys: dict[int, set[str]] = {}
    for name in names:
        if name.startswith("checkpoint_partition_") and name.endswith(".json"):
            key = name[len("checkpoint_"):-len(".json")]
            keys.setdefault(int(key[len("partition_"):].split("_", 1)[0]), set()).add(key)
    return keys


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
    compression: str = "zstd"  # as requested; resolve_codec says what is written
    memory_map: bool = False  # map local Arrow data instead of reading it (arrow_memory_mapping)

    def manifest_path(self, key: str) -> str:
        return join(self.root, manifest_name(key))

    def data_path(self, key: str) -> str:
        return join(self.root, f"{key}.{resolve_codec(self.fmt, self.compression).suffix}")

    def write(self, key: str, table: pa.Table, partition_id: int, upto: int, op_names: list[str]) -> str:
        """Data first, manifest last; returns the manifest path."""
        data = encode_table(table, self.fmt, self.compression)
        return self.write_encoded(key, data, table.num_rows, table.schema, partition_id, upto, op_names)

    def write_encoded(self, key: str, data: bytes, rows: int, schema: pa.Schema, partition_id: int, upto: int,
                      op_names: list[str]) -> str:
        self.storage.put_bytes(self.data_path(key), data)
        failpoint("checkpoint_mid_write")
        manifest = {
            "key": key, "partition_id": partition_id, "upto": upto, "op_names": op_names,
            "rows": rows, "content_hash": xxhash.xxh3_128(data).hexdigest(), "bytes": len(data),
            "format": self.fmt, "compression": resolve_codec(self.fmt, self.compression).compression,
            "data_path": self.data_path(key), "schema": schema_b64(schema), "created_at": time.time(),
        }
        path = self.manifest_path(key)
        self.storage.put_bytes(path, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        return path

    def keys_for(self, partition_id: int) -> set[str]:
        """Keys with a manifest for this partition (one listing; data is verified on load)."""
        prefix = f"checkpoint_{partition_name(partition_id)}_"
        return keys_by_partition(self.storage.listdir(self.root, prefix)).get(partition_id, set())

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
            data = read_data(self.storage, manifest["data_path"], manifest["format"], self.memory_map)
        except FileNotFoundError as err:
            return None, f"missing file: {err}"
        except orjson.JSONDecodeError as err:
            return None, f"unreadable manifest: {err}"
        # the hash runs over a mapped buffer too: mapping skips the copy, never the check
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
