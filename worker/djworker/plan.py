"""The partition plan: input -> deterministic partitions -> metadata/dataset_mapping.json.

The plan is made once per job and persisted with a fingerprint of the input. It is a
value: nothing records run state in it (that is the event fold's job, see progress.py),
so the file is written once, when the job is planned. Files written by earlier versions
also hold per-partition run fields (status, retries, times, error); they are ignored on
read, and those versions read this plan with their defaults.
Each partition's input slice is written in the intermediate format (Parquet unless
intermediate_storage.format says otherwise) and read by workers directly from
storage, so the driver never ships data. Re-planning the same input
gives the same partitions and checksums, which is what makes checkpoint keys stable."""
from __future__ import annotations

import io
import time
from typing import Any, Callable, Optional, Sequence

import orjson
import xxhash
from pydantic import BaseModel, ConfigDict

from .errors import InputError
from .sources import Reject, input_files, iter_slices, parse_slice, with_suffixes
from .codec import encode_table, resolve_codec
from .storage import Storage, join

PLAN_VERSION = 1


class Partition(BaseModel):
    """One input slice, by position: which rows, where they were written, and their checksum."""

    model_config = ConfigDict(frozen=True)  # extra keys (an older version's run fields) are ignored

    partition_id: int
    path: str
    sample_count: int
    bytes: int
    checksum: str
    source: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return self.checksum[:16]


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: int = PLAN_VERSION
    job_id: str
    dataset_path: str
    input_files: list[dict[str, Any]]
    input_fingerprint: str
    text_key: str
    partition_size: int
    max_size_mb: float
    total_samples: int
    rejected_samples: int
    rejects_path: Optional[str]
    created_at: float
    partitions: tuple[Partition, ...]


def fingerprint(files: list[dict[str, Any]]) -> str:
    """Identity of the input as storage reports it: paths, sizes and versions (mtime/ETag)."""
    return xxhash.xxh3_128(orjson.dumps(files, option=orjson.OPT_SORT_KEYS)).hexdigest()


def partition_name(pid: int) -> str:
    return f"partition_{pid:06d}"


def build_plan(storage: Storage, job_id: str, dataset_path: str, text_key: str, rows: int, max_mb: float,
               data_dir: str, rejects_path: str, on_reject: Callable[[Reject], None],
               compression: str = "zstd", fmt: str = "parquet", suffixes: Sequence[str] = (),
               add_suffix: bool = False) -> Plan:
    """Stream the input once, writing each slice as partitions/partition_XXXXXX.<suffix> in fmt.

    Checksums hash the raw input lines, so checkpoint keys do not depend on fmt."""
    suffix = resolve_codec(fmt, compression).suffix
    files = input_files(storage, dataset_path, suffixes)
    partitions: list[Partition] = []
    rejects = io.BytesIO()
    n_rejected = 0

    def reject(r: Reject) -> None:
        nonlocal n_rejected
        n_rejected += 1
        rejects.write(orjson.dumps(r.__dict__) + b"\n")
        on_reject(r)

    for sl in iter_slices(storage, files, text_key, rows, int(max_mb * 1024 * 1024)):
        table, slice_rejects = parse_slice(sl, text_key)
        if add_suffix:
            table = with_suffixes(table, sl, slice_rejects)
        for r in slice_rejects:
            reject(r)
        if table.num_rows == 0:
            continue
        pid = len(partitions)
        path = join(data_dir, "partitions", f"{partition_name(pid)}.{suffix}")
        # one sync for all of them below: an fsync per file cost more than parsing at small partitions
        storage.put_bytes(path, encode_table(table, fmt, compression), durable=False)
        partitions.append(Partition(
            partition_id=pid, path=path, sample_count=table.num_rows, bytes=sl.nbytes, checksum=sl.checksum,
            source={"first": list(sl.first or ()), "last": list(sl.last or ())},
        ))
    if partitions:  # durable before the plan that names them is saved
        storage.sync(join(data_dir, "partitions"))
    if n_rejected:
        storage.put_bytes(rejects_path, rejects.getvalue())
    if not partitions:
        raise InputError(f"dataset_path {dataset_path!r} holds no valid records ({n_rejected} rejected"
                         f"{', see ' + rejects_path if n_rejected else ''}); check the file and text_keys")
    return Plan(job_id=job_id, dataset_path=dataset_path, input_files=files, input_fingerprint=fingerprint(files),
                text_key=text_key, partition_size=rows, max_size_mb=max_mb,
                total_samples=sum(p.sample_count for p in partitions), rejected_samples=n_rejected,
                rejects_path=rejects_path if n_rejected else None, created_at=time.time(), partitions=tuple(partitions))


def save_plan(storage: Storage, path: str, plan: Plan) -> None:
    storage.put_bytes(path, orjson.dumps(plan.model_dump(), option=orjson.OPT_INDENT_2))


def load_plan(storage: Storage, path: str) -> Optional[Plan]:
    try:
        return Plan.model_validate_json(storage.read_bytes(path))
    except FileNotFoundError:
        return None


def check_input_unchanged(storage: Storage, plan: Plan) -> None:
    """A resumed job must see the input it planned; otherwise checkpoints would mix datasets."""
    now = input_files(storage, plan.dataset_path)
    if fingerprint(now) != plan.input_fingerprint:
        raise InputError(
            f"input {plan.dataset_path!r} changed since job {plan.job_id} was planned "
            f"(files, sizes or versions differ); start a new job with another --job_id to process the new data")
