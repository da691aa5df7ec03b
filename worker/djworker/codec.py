"""The Arrow codec: tables to and from bytes in each intermediate format (parquet, arrow, jsonl) and compression."""
from __future__ import annotations

import base64
import gzip
import io
from typing import NamedTuple, Optional, Union

import orjson
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

from .sources import lines_table
from .storage import Storage, local_path

JSONL_SUFFIXES = {"none": "jsonl", "gzip": "jsonl.gz", "zstd": "jsonl.zst"}


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


