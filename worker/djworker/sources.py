"""Stream JSONL (also .gz/.zst via fsspec) and Parquet into slices of valid records.

Memory is bounded by one slice: records are read one at a time and cut into
partitions by count and bytes. Malformed records are counted and handed to a
reject callback with their line number and reason; they are never silently dropped."""
from __future__ import annotations

import gzip
import posixpath
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import io
import re

import orjson
import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq
import xxhash

from .errors import InputError
from .storage import Storage, is_remote

DATA_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".parquet")


@dataclass
class Reject:
    file: str
    record: int  # 1-based line (JSONL) or row (Parquet) number in that file
    reason: str
    raw: str


@dataclass
class Slice:
    """A run of consecutive valid records (their raw JSON lines): the input of one partition."""

    lines: list[bytes] = field(default_factory=list)
    where: list[tuple[str, int]] = field(default_factory=list)  # (file, record number) per line
    nbytes: int = 0

    def add(self, raw: bytes, where: tuple[str, int]) -> None:  # per input line: keep it lean
        self.lines.append(raw)
        self.where.append(where)
        self.nbytes += len(raw)

    @property
    def first(self) -> Optional[tuple[str, int]]:
        return (posixpath.basename(self.where[0][0]), self.where[0][1]) if self.where else None

    @property
    def last(self) -> Optional[tuple[str, int]]:
        return (posixpath.basename(self.where[-1][0]), self.where[-1][1]) if self.where else None

    @property
    def checksum(self) -> str:
        """xxh3-128 of every line followed by a newline (one pass over the joined bytes)."""
        digest = xxhash.xxh3_128(b"\n".join(self.lines))
        if self.lines:
            digest.update(b"\n")
        return digest.hexdigest()


def input_files(storage: Storage, uri: str, suffixes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The data files behind a dataset path (a file, a directory or a glob), in sorted order,
    with the size and version facts that fingerprint the input.

    `suffixes` (DataJuicer's key: 'jsonl' or '.jsonl' alike) narrows a directory or glob to
    files with those suffixes."""
    fs = storage.fs(uri)
    path = uri.split("://", 1)[1] if is_remote(uri) else uri
    try:
        if any(c in path for c in "*?["):
            paths = sorted(fs.glob(path))
        elif fs.isdir(path):
            paths = sorted(p for p in fs.find(path) if p.endswith(DATA_SUFFIXES))
        elif fs.exists(path):
            paths = [path]
        else:
            paths = []
    except FileNotFoundError:
        paths = []
    wanted = tuple("." + s.lstrip(".") for s in suffixes)
    if wanted and paths != [path]:  # a directory or glob; a file named outright is always read
        paths = [p for p in paths if p.endswith(wanted)]
        if not paths:
            raise InputError(f"dataset_path {uri!r} holds no files with the suffixes {list(suffixes)}; "
                             "check suffixes")
    if not paths:
        raise InputError(f"dataset_path {uri!r} does not exist or holds no .jsonl/.jsonl.gz/.parquet files; check the path")
    prefix = uri.split("://", 1)[0] + "://" if is_remote(uri) else ""
    files = []
    for p in paths:
        info = fs.info(p)
        version = info.get("ETag") or info.get("mtime") or info.get("LastModified") or info.get("created")
        files.append({"path": prefix + p if prefix and not p.startswith(prefix) else p,
                      "size": int(info.get("size") or 0), "version": str(version)})
    return files


def iter_records(storage: Storage, file: str, text_key: str) -> Iterator[tuple[int, bytes, Optional[dict], Optional[str]]]:
    """(record number, raw bytes, parsed row or None, reject reason or None) for one file."""
    if file.endswith(".parquet"):
        yield from _parquet_records(storage, file, text_key)
        return
    with storage.open(file, "rb", compression="infer") as fh:
        for n, line in enumerate(fh, start=1):
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue  # blank lines are layout, not records
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError as err:
                yield n, raw, None, f"invalid JSON: {err}"
                continue
            yield n, raw, *_check(row, text_key)


def _check(row: Any, text_key: str) -> tuple[Optional[dict], Optional[str]]:
    if not isinstance(row, dict):
        return None, f"record is a JSON {type(row).__name__}, not an object"
    if text_key not in row:
        return None, f"missing text key {text_key!r}"
    if not isinstance(row[text_key], str):
        return None, f"text key {text_key!r} holds {type(row[text_key]).__name__}, not a string"
    return row, None


def _parquet_records(storage: Storage, file: str, text_key: str) -> Iterator[tuple[int, bytes, Optional[dict], Optional[str]]]:
    with storage.open(file, "rb") as fh:
        try:
            pf = pq.ParquetFile(fh)
        except pa.ArrowInvalid as err:
            raise InputError(f"{file}: not a readable Parquet file ({err}); replace it or remove it from dataset_path") from None
        if text_key not in pf.schema_arrow.names:
            raise InputError(f"{file}: Parquet schema has no text column {text_key!r} (columns: {pf.schema_arrow.names}); set text_keys")
        n = 0
        for batch in pf.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                n += 1
                raw = orjson.dumps(row, default=str, option=orjson.OPT_SORT_KEYS)
                yield n, raw, *_check(row, text_key)


def iter_raw(storage: Storage, file: str, text_key: str) -> Iterator[tuple[int, bytes]]:
    """(record number, raw JSON line) for one file, unparsed; Parquet rows are rendered as JSON."""
    if file.endswith(".parquet"):
        for n, raw, _, _ in _parquet_records(storage, file, text_key):
            yield n, raw
        return
    n = 0
    try:
        with storage.open(file, "rb", compression="infer") as fh:
            for n, line in enumerate(fh, start=1):
                raw = line.rstrip(b"\r\n")
                if raw and not raw.isspace():  # blank lines are layout, not records
                    yield n, raw
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise InputError(f"{file}: unreadable after line {n} ({type(err).__name__}: {err}); the compressed file is "
                         "truncated or corrupt: replace it or remove it from dataset_path") from None


def iter_slices(storage: Storage, files: list[dict[str, Any]], text_key: str, max_rows: int,
                max_bytes: int) -> Iterator[Slice]:
    """Consecutive records cut at max_rows or before max_bytes would be exceeded.

    Records are validated per slice (parse_slice), so a clean slice is parsed once, in C++."""
    current = Slice()
    for f in files:
        for n, raw in iter_raw(storage, f["path"], text_key):
            if current.lines and (len(current.lines) >= max_rows or current.nbytes + len(raw) > max_bytes):
                yield current
                current = Slice()
            current.add(raw, (f["path"], n))
    if current.lines:
        yield current


SUFFIX_COLUMN = "__dj__suffix__"


def file_suffix(path: str) -> str:
    """DataJuicer's suffix of an input file: its last extension, lower-cased, or the last two
    for a compressed file ('.jsonl.gz', '.jsonl.zst')."""
    parts = [f".{p.lower()}" for p in posixpath.basename(path).split(".")[1:]]
    return "".join(parts[-2:]) if parts and parts[-1] in (".gz", ".zst") else "".join(parts[-1:])


def with_suffixes(table: pa.Table, sl: Slice, rejects: list[Reject]) -> pa.Table:
    """The slice's valid rows with DataJuicer's __dj__suffix__ (their file's suffix), as DataJuicer
    adds it when a recipe has a suffix_filter; a column the input already has is kept."""
    if SUFFIX_COLUMN in table.column_names or not table.num_rows:
        return table
    rejected = {(r.file, r.record) for r in rejects}
    files = [file for file, n in sl.where if (file, n) not in rejected]
    return table.append_column(SUFFIX_COLUMN, pa.array([file_suffix(f) for f in files], pa.string()))


def parse_slice(sl: Slice, text_key: str) -> tuple[pa.Table, list[Reject]]:
    """The slice's valid records as a table, and its malformed ones as rejects (never dropped silently)."""
    table = _fast_table(sl.lines)
    if table is not None and _all_valid(table, text_key):
        return table, []
    good, rejects = [], []
    for raw, (file, n) in zip(sl.lines, sl.where):
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            rejects.append(Reject(file, n, f"invalid JSON: {err}", raw[:10_000].decode("utf-8", "replace")))
            continue
        _, reason = _check(row, text_key)
        if reason is not None:
            rejects.append(Reject(file, n, reason, raw[:10_000].decode("utf-8", "replace")))
        else:
            good.append(raw)
    return (slice_table(good, text_key) if good else pa.table({})), rejects


def _all_valid(table: pa.Table, text_key: str) -> bool:
    if text_key not in table.column_names:
        return False
    col = table.column(text_key)
    return (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) and col.null_count == 0


def _fast_table(lines: list[bytes]) -> Optional[pa.Table]:
    """Arrow's C++ JSON reader, used only when its types are the ones Python objects would get:
    it infers timestamps from strings, which would change the output, so temporal types fall back."""
    try:
        table = pj.read_json(io.BytesIO(b"\n".join(lines)), read_options=pj.ReadOptions(block_size=1 << 24))
        table.validate(full=True)  # Arrow's reader lets invalid UTF-8 through; the per-line path rejects it
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(lines) or _has_type(table.schema, pa.types.is_temporal):
        return None
    if _has_type(table.schema, pa.types.is_floating) and any(BIG_INT.search(line) for line in lines):
        return None  # Arrow reads integers past int64 as float64; orjson keeps them exact
    return table


def slice_table(lines: list[bytes], text_key: str) -> pa.Table:
    """Valid JSON lines as an Arrow table. Fields whose types disagree across rows are kept as
    JSON text in one column so that nothing is lost; export turns them back into fields."""
    try:
        return lines_table(lines)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        rows = [orjson.loads(line) for line in lines]
        texts = pa.array([r[text_key] for r in rows], pa.string())
        rest = pa.array([orjson.dumps({k: v for k, v in r.items() if k != text_key}).decode() for r in rows], pa.string())
        return pa.table({text_key: texts, EXTRA_JSON_COLUMN: rest})


def lines_table(lines: list[bytes]) -> pa.Table:
    """JSON lines as a table typed the way planning types them; raises ArrowInvalid, ArrowTypeError
    or OverflowError when a field's types disagree (a table's own rows never do)."""
    table = _fast_table(lines)
    if table is not None:
        return table
    return pa.Table.from_pylist([orjson.loads(line) for line in lines])


EXTRA_JSON_COLUMN = "__dj__extra_json__"


BIG_INT = re.compile(rb"(?<![\d.eE])\d{19,}(?![\d.eE])")


def _has_type(schema: pa.Schema, kind: Any) -> bool:
    def has(t: pa.DataType) -> bool:
        if kind(t):
            return True
        if pa.types.is_struct(t):
            return any(has(t.field(i).type) for i in range(t.num_fields))
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return has(t.value_type)
        return False
    return any(has(f.type) for f in schema)
