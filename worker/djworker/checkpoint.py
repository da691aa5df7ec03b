"""Checkpoints: which ones to write (policy), what they are called (key), and how
they are written and trusted (atomic, verified on load).

A checkpoint is a data object plus a manifest object written *last*; a checkpoint
without a valid manifest does not exist, so a writer killed mid-write leaves only
garbage that is ignored and overwritten. Loading re-hashes the data and compares
row counts, so a torn or corrupted checkpoint is recomputed, never trusted."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, Iterable, Optional, Sequence

import orjson
import pyarrow as pa
import xxhash

# Re-exported: callers that write checkpoints use the codec through this module too.
from .codec import (Codec, Data, compression_note, decode_table, encode_table, format_of, read_data,  # noqa: F401
                    read_partition, resolve_codec, schema_b64, schema_from_b64)
from .config import Strategy
from .faults import failpoint
from .plan import Partition, partition_name
from .storage import Storage, join



# ---- pure core ------------------------------------------------------------
def prefix_hash(ops: Sequence[Any], upto: int, digests: Optional[dict[int, str]] = None) -> str:
    """Hash of ops[:upto] *with their parameters*: an edited op changes every later key.

    A global op's (deduplicator's, selector's) result depends on every partition, so its entry
    also carries the digest of the global decision it applied (`digests[op_idx]`)."""
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
    # False for op checkpoints: load() verifies hash and rows, so a file a machine crash cut
    # short is recomputed, and skipping the fsync matters at small partitions. Results stay
    # durable: a result with a manifest counts as done and is only verified at export.
    durable: bool = True

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
        self.storage.put_bytes(self.data_path(key), data, durable=self.durable)
        failpoint("checkpoint_mid_write")
        manifest = {
            "key": key, "partition_id": partition_id, "upto": upto, "op_names": op_names,
            "rows": rows, "content_hash": xxhash.xxh3_128(data).hexdigest(), "bytes": len(data),
            "format": self.fmt, "compression": resolve_codec(self.fmt, self.compression).compression,
            "data_path": self.data_path(key), "schema": schema_b64(schema), "created_at": time.time(),
        }
        path = self.manifest_path(key)
        self.storage.put_bytes(path, orjson.dumps(manifest, option=orjson.OPT_INDENT_2), durable=self.durable)
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
