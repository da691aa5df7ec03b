"""intermediate_storage.format x compression: every file a job keeps (partition slices, checkpoints,
preserved intermediate data) has the suffix of the codec it really uses and opens with standard
tools, manifests record that codec, and the job's output never depends on the choice."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash

from djworker.checkpoint import Checkpoints, compression_note, encode_table, read_partition, resolve_codec, schema_b64
from djworker.config import build_ops, load_recipe
from djworker.demo_data import rows as demo_rows
from djworker.jobs import JobPaths
from djworker.stages import stage_tasks
from djworker.storage import Storage
from tests.support.engine import dj_process, event_types, events, make_recipe

ZSTD_MAGIC, GZIP_MAGIC = b"\x28\xb5\x2f\xfd", b"\x1f\x8b"
COMPRESSIONS = ["snappy", "gzip", "zstd", "none"]
# (format, requested) -> (codec really used, suffix); the rows marked "note" are substitutions
EXPECTED = {
    ("parquet", "snappy"): ("snappy", "parquet"), ("parquet", "gzip"): ("gzip", "parquet"),
    ("parquet", "zstd"): ("zstd", "parquet"), ("parquet", "none"): ("none", "parquet"),
    ("arrow", "snappy"): ("zstd", "arrow"), ("arrow", "gzip"): ("zstd", "arrow"),  # note
    ("arrow", "zstd"): ("zstd", "arrow"), ("arrow", "none"): ("none", "arrow"),
    ("jsonl", "snappy"): ("zstd", "jsonl.zst"),  # note
    ("jsonl", "gzip"): ("gzip", "jsonl.gz"), ("jsonl", "zstd"): ("zstd", "jsonl.zst"), ("jsonl", "none"): ("none", "jsonl"),
}
SUBSTITUTED = {("arrow", "snappy"), ("arrow", "gzip"), ("jsonl", "snappy")}
ROWS = 400  # four 100-row partitions, each typed by a different path of the planner


def varied_rows() -> Iterator[dict[str, Any]]:
    """Demo rows whose partitions exercise every way planning types JSON: Arrow's reader (nested,
    optional keys, integral floats), Python objects (date-like strings Arrow would make timestamps),
    and JSON text for fields whose types disagree or overflow int64."""
    for row in demo_rows(ROWS):
        i = row["id"]
        row["meta"] = {"lang": "en", **({"score": 1.0} if i % 2 else {})}
        row["tags"] = ["t"] * (i % 3)
        if i // 100 == 1:
            row["date"] = f"2020-01-{i % 28 + 1:02d}"
        if i // 100 == 2 and i % 4 == 0:
            row["id"] = str(i)
        if i // 100 == 3:
            row["big"] = 10**20 + i
        yield row


def varied_lines() -> list[bytes]:
    return [json.dumps(r, ensure_ascii=False).encode() for r in varied_rows()]  # orjson stops at 64-bit ints


def job_recipe(tmp: Path, fmt: str, compression: str, export: str = "result.jsonl", varied: bool = True,
               **storage: Any) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    if varied:
        (tmp / "input.jsonl").write_bytes(b"".join(line + b"\n" for line in varied_lines()))
    return make_recipe(tmp, rows=ROWS, export_path=str(tmp / "out" / export), checkpoint={"strategy": "every_op"},
                       intermediate_storage={"format": fmt, "compression": compression,
                                             "preserve_intermediate_data": True, **storage})


def run_ok(recipe: Path, job: str, **kw: Any) -> None:
    proc = dj_process(recipe, job, **kw)
    assert proc.returncode == 0, proc.stderr


def checksums(tmp: Path, job: str) -> list[str]:
    plan = json.loads((tmp / "jobs" / job / "metadata" / "dataset_mapping.json").read_text())
    return [p["checksum"] for p in plan["partitions"]]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict[str, Any]:
    """The parquet/zstd run (the default) that every other combination must reproduce."""
    tmp = tmp_path_factory.mktemp("baseline")
    run_ok(job_recipe(tmp, "parquet", "zstd"), "base")
    out = (tmp / "out" / "result.jsonl").read_bytes()
    assert out.count(b"\n") > 100
    return {"export": out, "checksums": checksums(tmp, "base")}


def standard_rows(path: Path) -> int:
    """Rows in a file as a user would read it, with no engine code and no sizes from a manifest."""
    name = path.name
    if name.endswith(".parquet"):
        return pq.read_table(path).num_rows
    if name.endswith(".arrow"):
        with pa.ipc.open_file(path) as reader:
            return reader.read_all().num_rows
    if name.endswith(".jsonl.gz"):
        with gzip.open(path, "rb") as fh:
            return sum(1 for line in fh if orjson.loads(line))
    if name.endswith(".jsonl.zst"):
        assert path.read_bytes()[:4] == ZSTD_MAGIC
        with pa.CompressedInputStream(pa.OSFile(str(path)), "zstd") as stream:
            text = stream.read()
        if shutil.which("zstd"):  # the command-line tool agrees, without knowing any size
            assert subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout == text
        return sum(1 for line in text.splitlines() if orjson.loads(line))
    assert name.endswith(".jsonl") and path.read_bytes()[:1] == b"{"
    return sum(1 for line in path.read_bytes().splitlines() if orjson.loads(line))


# ---- the pure rules -----------------------------------------------------------
@pytest.mark.parametrize("fmt, compression", sorted(EXPECTED))
def test_each_request_resolves_to_a_codec_its_format_can_store(fmt, compression):
    codec, suffix, note = resolve_codec(fmt, compression)
    assert (codec, suffix) == EXPECTED[fmt, compression]
    assert compression_note(fmt, compression) == note
    if (fmt, compression) in SUBSTITUTED:
        assert compression in note and "zstd" in note
    else:
        assert note is None


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "jsonl"])
def test_encoded_files_round_trip_as_partitions(tmp_path, fmt):
    """A partition slice reads back with the types it was planned with, read by its suffix alone."""
    from djworker.sources import slice_table

    lines = varied_lines()
    for part in range(4):
        planned = slice_table(lines[part * 100:(part + 1) * 100], "text")
        for compression in COMPRESSIONS:
            path = tmp_path / f"p{part}_{compression}.{resolve_codec(fmt, compression).suffix}"
            path.write_bytes(encode_table(planned, fmt, compression))
            got = read_partition(Storage(), str(path))
            assert got.schema == planned.schema and got.equals(planned), (part, compression)


def test_checkpoints_written_as_raw_compressed_blocks_still_load(tmp_path):
    """Before .jsonl.zst, a jsonl checkpoint was a pa.compress block with its size in the manifest:
    an older job must still resume from it."""
    table = pa.table({"text": ["a", "bb"], "id": [1, 2]})
    store = Checkpoints(Storage(), str(tmp_path), "jsonl", "zstd")
    for codec in ("zstd", "snappy"):
        raw = b"".join(orjson.dumps(r) + b"\n" for r in table.to_pylist())
        data = pa.compress(raw, codec=codec, asbytes=True)
        (tmp_path / f"k_{codec}.jsonl").write_bytes(data)
        manifest = {"key": f"k_{codec}", "partition_id": 0, "upto": 1, "op_names": ["x"], "rows": 2,
                    "content_hash": xxhash.xxh3_128(data).hexdigest(), "bytes": len(data), "format": "jsonl",
                    "compression": codec, "raw_size": len(raw), "data_path": str(tmp_path / f"k_{codec}.jsonl"),
                    "schema": schema_b64(table.schema), "created_at": 0}
        (tmp_path / f"checkpoint_k_{codec}.json").write_bytes(orjson.dumps(manifest))
        loaded, problem = store.load(f"k_{codec}")
        assert problem is None and loaded.equals(table)


# ---- whole jobs -------------------------------------------------------------
@pytest.mark.parametrize("fmt, compression", sorted(EXPECTED))
def test_every_format_and_codec_gives_the_same_output_and_standard_files(tmp_path, baseline, fmt, compression):
    codec, suffix = EXPECTED[fmt, compression]
    recipe = job_recipe(tmp_path, fmt, compression)
    run_ok(recipe, "f")
    assert (tmp_path / "out" / "result.jsonl").read_bytes() == baseline["export"]
    assert checksums(tmp_path, "f") == baseline["checksums"]  # checkpoint keys do not depend on the format
    warned = [e["message"] for e in events(tmp_path, "f") if e["event_type"] == "WARNING"]
    note = compression_note(fmt, compression)
    assert warned == ([note] if note else [])  # a substituted codec is said at job start, once

    partitions = sorted((tmp_path / "jobs" / "f" / "partitions").iterdir())
    assert [p.name for p in partitions] == [f"partition_{i:06d}.{suffix}" for i in range(4)]
    assert sum(standard_rows(p) for p in partitions) == ROWS

    ckpt = tmp_path / "ckpt" / "f"
    manifests = [json.loads(p.read_text()) for p in sorted(ckpt.glob("checkpoint_*.json"))]
    assert len(manifests) == 4 * len(build_ops(load_recipe(recipe)))
    for m in manifests:
        assert m["compression"] == codec and m["data_path"].endswith(f".{suffix}")
        assert standard_rows(Path(m["data_path"])) == m["rows"]
        if fmt == "parquet":
            meta = pq.ParquetFile(m["data_path"]).metadata
            assert meta.row_group(0).column(0).compression == ("UNCOMPRESSED" if codec == "none" else codec.upper())

    names = [name for name, _ in load_recipe(recipe).ops]
    rows = {(m["partition_id"], m["upto"]): m["rows"] for m in manifests}
    for pid, part in enumerate(sorted((tmp_path / "jobs" / "f" / "intermediate").iterdir())):
        files = sorted(part.iterdir())
        assert [f.name for f in files] == [f"op_{i:03d}_{n}.{suffix}" for i, n in enumerate(names)]
        assert [standard_rows(f) for f in files] == [rows[pid, i + 1] for i in range(len(names))]


@pytest.mark.parametrize("fmt, compression", [("jsonl", "gzip"), ("arrow", "none"), ("parquet", "snappy")])
def test_parquet_export_bytes_do_not_depend_on_the_intermediate_format(tmp_path, fmt, compression):
    outputs = []
    for f, c in [("parquet", "zstd"), (fmt, compression)]:
        recipe = job_recipe(tmp_path / f"{f}-{c}", f, c, export="result.parquet", varied=False)
        run_ok(recipe, "p")
        outputs.append((tmp_path / f"{f}-{c}" / "out" / "result.parquet").read_bytes())
    assert outputs[0] == outputs[1]


def test_a_killed_jsonl_gzip_job_resumes_from_its_checkpoints_to_the_same_output(tmp_path, baseline):
    recipe = job_recipe(tmp_path, "jsonl", "gzip")
    assert dj_process(recipe, "k", env={"DJ_FAILPOINTS": "op_done=7"}).returncode == -signal.SIGKILL
    assert list((tmp_path / "ckpt" / "k").glob("*.jsonl.gz"))
    run_ok(recipe, "k")
    evs = events(tmp_path, "k")
    after = evs[event_types(evs).index("JOB_RESUMED"):]
    assert any(e["event_type"] == "CHECKPOINT_LOAD" for e in after)
    assert not any(e["event_type"] == "CHECKPOINT_INVALID" for e in after)
    assert (tmp_path / "out" / "result.jsonl").read_bytes() == baseline["export"]


# ---- arrow_memory_mapping -----------------------------------------------------
def is_mapped(path: Path) -> bool:
    return str(path) in Path("/proc/self/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_memory_mapped_arrow_checkpoints_are_used_in_place_and_still_verified(tmp_path):
    table = pa.Table.from_pylist(list(demo_rows(2000)))
    for memory_map in (False, True):
        store = Checkpoints(Storage(), str(tmp_path / str(memory_map)), "arrow", "none", memory_map=memory_map)
        store.write("k", table, 0, 1, ["x"])
        data = Path(store.data_path("k"))
        loaded, problem = store.load("k")
        assert problem is None and loaded.equals(table)
        assert is_mapped(data) is memory_map  # the table's columns point into the file itself
        del loaded
        torn = data.with_suffix(".tmp")  # a new file, renamed over: never truncate a mapped one
        torn.write_bytes(data.read_bytes()[:-8] + b"\0" * 8)  # same size: only the hash can tell
        os.replace(torn, data)
        loaded, problem = store.load("k")
        assert loaded is None and "hash" in problem


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_memory_mapped_arrow_partitions_are_used_in_place(tmp_path):
    table = pa.Table.from_pylist(list(demo_rows(500)))
    path = tmp_path / "partition_000000.arrow"
    path.write_bytes(encode_table(table, "arrow", "none"))
    unmapped = read_partition(Storage(), str(path))
    assert not is_mapped(path)
    mapped = read_partition(Storage(), str(path), memory_map=True)
    assert is_mapped(path) and mapped.equals(table) and unmapped.equals(table)


@pytest.mark.parametrize("nested, flat", [({"arrow_memory_mapping": True}, {}),
                                          ({}, {"arrow_memory_mapping": True})])  # the legacy flat key
def test_arrow_memory_mapping_reaches_every_partition_task(tmp_path, nested, flat):
    recipe = load_recipe(make_recipe(tmp_path, intermediate_storage={"format": "arrow", **nested}, **flat))
    part = SimpleNamespace(partition_id=0)
    plan = SimpleNamespace(partitions=[part])
    tasks = stage_tasks(recipe, JobPaths.of(recipe, "m"), Storage(), "m", plan, [], 0, {}, 0, 1)
    assert recipe.memory_map_arrow and tasks[0].memory_map_arrow
    off = load_recipe(make_recipe(tmp_path, name="off", intermediate_storage={"format": "arrow"}))
    assert not off.memory_map_arrow


def test_a_memory_mapped_arrow_job_gives_the_same_output(tmp_path, baseline):
    recipe = job_recipe(tmp_path, "arrow", "none", arrow_memory_mapping=True)
    run_ok(recipe, "mm")
    assert (tmp_path / "out" / "result.jsonl").read_bytes() == baseline["export"]
    assert (tmp_path / "jobs" / "mm" / "partitions" / "partition_000000.arrow").exists()
