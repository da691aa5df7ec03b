"""intermediate_storage.format and .compression change what is written; preserve_intermediate_data
keeps every op's output under intermediate/partition_XXXXXX/op_XXX_<name>.<ext>."""
from __future__ import annotations

import gzip
from pathlib import Path
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from djworker.checkpoint import Checkpoints
from djworker.config import Strategy, build_ops, load_recipe
from djworker.demo_data import rows as demo_rows
from djworker.ops import build_op
from djworker.plan import Partition
from djworker.run import PartitionTask, run_partition
from djworker.storage import Storage, StorageOptions
from tests.support.engine import dj_process, make_recipe, output_rows

OPS = [("clean_links_mapper", {}), ("whitespace_normalization_mapper", {}), ("text_length_filter", {"min_len": 50})]
ZSTD_MAGIC, GZIP_MAGIC = b"\x28\xb5\x2f\xfd", b"\x1f\x8b"


def run_one_partition(tmp: Path, fmt: str, compression: str, preserve: bool = True) -> tuple[PartitionTask, list[dict]]:
    """One partition through the real runner (no pool, no driver): what a worker would write."""
    table = pa.Table.from_pylist(list(demo_rows(200)))
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "partition_000000.parquet"
    pq.write_table(table, path)
    part = Partition(partition_id=0, path=str(path), sample_count=table.num_rows, bytes=path.stat().st_size,
                     checksum="0123456789abcdef0123", source={})
    task = PartitionTask(job_id="j", partition=part, ops=[build_op(n, a, f"process[{i}]") for i, (n, a) in enumerate(OPS)], strategy=Strategy.every_op,
                         n_ops=1, op_names=[], checkpoint_root=str(tmp / "ckpt"), results_root=str(tmp / "results"),
                         intermediate_root=str(tmp / "intermediate") if preserve else None,
                         storage_options=StorageOptions(), fmt=fmt, compression=compression)
    emitted: list[dict] = []
    run_partition(task, emitted.append)
    return task, emitted


def parquet_codecs(path: Path) -> set[str]:
    meta = pq.ParquetFile(path).metadata
    return {meta.row_group(g).column(c).compression for g in range(meta.num_row_groups) for c in range(meta.num_columns)}


@pytest.mark.parametrize("compression, codec", [("snappy", "SNAPPY"), ("gzip", "GZIP"), ("zstd", "ZSTD"),
                                                ("none", "UNCOMPRESSED")])
def test_parquet_checkpoints_and_intermediate_use_the_configured_codec(tmp_path, compression, codec):
    task, _ = run_one_partition(tmp_path, "parquet", compression)
    files = sorted((tmp_path / "ckpt").glob("*.parquet")) + sorted((tmp_path / "intermediate").rglob("*.parquet"))
    assert len(files) == 2 * len(OPS)
    assert all(parquet_codecs(f) == {codec} for f in files)


@pytest.mark.parametrize("compression, suffix, magic", [
    ("gzip", "jsonl.gz", GZIP_MAGIC), ("zstd", "jsonl.zst", ZSTD_MAGIC), ("none", "jsonl", b'{"'),
    ("snappy", "jsonl.zst", ZSTD_MAGIC),  # snappy has no standard file framing: zstd instead
])
def test_jsonl_checkpoints_and_intermediate_are_json_lines_in_the_configured_codec(tmp_path, compression, suffix, magic):
    task, _ = run_one_partition(tmp_path, "jsonl", compression)
    files = sorted((tmp_path / "ckpt").glob(f"*.{suffix}")) + sorted((tmp_path / "intermediate").rglob(f"*.{suffix}"))
    assert len(files) == 2 * len(OPS)
    assert all(f.read_bytes().startswith(magic) for f in files)
    if compression == "gzip":  # a standard stream: any tool can read it
        first = gzip.decompress(files[0].read_bytes()).splitlines()[0]
        assert set(orjson.loads(first)) == {"text", "id"}


def test_arrow_checkpoints_are_arrow_ipc_files_compressed_unless_none(tmp_path):
    sizes = {}
    for compression in ("none", "zstd", "gzip"):
        task, _ = run_one_partition(tmp_path / compression, "arrow", compression)
        files = sorted((tmp_path / compression / "ckpt").glob("*.arrow"))
        assert len(files) == len(OPS) and all(f.read_bytes()[:6] == b"ARROW1" for f in files)
        sizes[compression] = sum(f.stat().st_size for f in files)
    assert sizes["zstd"] < sizes["none"] * 0.8
    # Arrow IPC has no gzip/snappy codec: those fall back to zstd (README: intermediate storage)
    assert sizes["gzip"] == sizes["zstd"]


@pytest.mark.parametrize("fmt, compression", [("parquet", "snappy"), ("parquet", "none"), ("arrow", "zstd"),
                                              ("arrow", "none"), ("jsonl", "gzip"), ("jsonl", "zstd"), ("jsonl", "snappy"),
                                              ("jsonl", "none")])
def test_every_format_and_codec_loads_back_verified(tmp_path, fmt, compression):
    task, emitted = run_one_partition(tmp_path, fmt, compression, preserve=False)
    store = Checkpoints(Storage(), task.checkpoint_root, fmt, compression)
    expected = pa.Table.from_pylist(list(demo_rows(200)))
    for upto in range(1, len(OPS) + 1):
        expected = task.ops[upto - 1].process(expected)
        table, problem = store.load(task.key(upto))
        assert problem is None
        assert table.drop_columns([c for c in table.column_names if c.startswith("__dj__")]).to_pylist() == \
            expected.drop_columns([c for c in expected.column_names if c.startswith("__dj__")]).to_pylist()
    assert not (tmp_path / "intermediate").exists()  # preserve_intermediate_data off: nothing extra


@pytest.mark.parametrize("settings, ext", [
    ({"intermediate_storage": {"format": "jsonl", "compression": "gzip", "preserve_intermediate_data": True}}, "jsonl.gz"),
    ({"storage_format": "arrow", "preserve_intermediate_data": True}, "arrow"),  # the legacy flat keys
])
def test_preserved_intermediate_data_has_the_seed_layout(tmp_path, settings, ext):
    recipe = make_recipe(tmp_path, rows=300, **settings)
    proc = dj_process(recipe, "im")
    assert proc.returncode == 0, proc.stderr
    inter = tmp_path / "jobs" / "im" / "intermediate"
    names = [name for name, _ in load_recipe(recipe).ops]
    assert sorted(p.name for p in inter.iterdir()) == [f"partition_{i:06d}" for i in range(3)]
    for part in inter.iterdir():
        assert sorted(p.name for p in part.iterdir()) == [f"op_{i:03d}_{n}.{ext}" for i, n in enumerate(names)]
    assert {p.name.split(".", 1)[1] for p in (tmp_path / "ckpt" / "im").glob("partition_*")} == {ext}
    rows = [orjson.loads(line) for line in Path(load_recipe(recipe).dataset_path).read_bytes().splitlines()]
    table = pa.Table.from_pylist(rows)
    for op in build_ops(load_recipe(recipe)):
        table = op.process(table)
    assert output_rows(tmp_path / "out" / "result.jsonl") == table.drop_columns(
        [c for c in table.column_names if c.startswith("__dj__")]).to_pylist()
