"""Checkpoint policy, keys and verified loading."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from djworker.checkpoint import Checkpoints, checkpoint_key, should_checkpoint
from djworker.config import Strategy
from djworker.ops import build_op
from djworker.plan import Partition
from djworker.storage import Storage

NAMES = ["a", "b", "c", "d", "e"]


def after(strategy, **kw):
    return [i for i, name in enumerate(NAMES) if should_checkpoint(strategy, i, len(NAMES), name, **kw)]


@pytest.mark.parametrize("strategy, kw, expected", [
    (Strategy.every_op, {}, [0, 1, 2, 3, 4]),
    (Strategy.every_partition, {}, [4]),
    (Strategy.every_n_ops, {"n_ops": 2}, [1, 3]),
    (Strategy.every_n_ops, {"n_ops": 3}, [2]),
    (Strategy.manual, {"op_names": ["b", "e"]}, [1, 4]),
    (Strategy.disabled, {}, []),
])
def test_each_strategy_checkpoints_after_exactly_its_ops(strategy, kw, expected):
    assert after(strategy, **kw) == expected


def part(checksum="ab" * 16, pid=3):
    return Partition(partition_id=pid, path="p", sample_count=1, bytes=1, checksum=checksum, source={})


def test_key_changes_with_op_parameters_but_not_with_later_ops():
    ops1 = [build_op("clean_links_mapper", {}, "t"), build_op("text_length_filter", {"min_len": 5}, "t")]
    ops2 = [build_op("clean_links_mapper", {}, "t"), build_op("text_length_filter", {"min_len": 6}, "t")]
    assert checkpoint_key(part(), ops1, 1) == checkpoint_key(part(), ops2, 1)
    assert checkpoint_key(part(), ops1, 2) != checkpoint_key(part(), ops2, 2)
    assert checkpoint_key(part(), ops1, 1) != checkpoint_key(part("cd" * 16), ops1, 1)


@pytest.mark.parametrize("fmt, compression", [("parquet", "zstd"), ("parquet", "snappy"), ("arrow", "zstd"),
                                              ("jsonl", "none"), ("jsonl", "gzip"), ("jsonl", "zstd")])
def test_roundtrip_and_torn_data_is_rejected(tmp_path, fmt, compression):
    store = Checkpoints(Storage(), str(tmp_path), fmt, compression)
    table = pa.table({"text": ["a", "bb", None], "id": [1, 2, 3]})
    store.write("k1", table, 0, 1, ["x"])
    loaded, problem = store.load("k1")
    assert problem is None and loaded.to_pylist() == table.to_pylist()
    data = Path(store.data_path("k1"))  # .jsonl.gz / .jsonl.zst when compressed
    data.write_bytes(data.read_bytes()[:-3])
    loaded, problem = store.load("k1")
    assert loaded is None and "hash" in problem


def test_checkpoint_without_manifest_does_not_exist(tmp_path):
    store = Checkpoints(Storage(), str(tmp_path))
    (tmp_path / "partition_000003_op001_x_y.parquet").write_bytes(b"garbage")
    assert store.keys_for(3) == set()


@pytest.mark.parametrize("durable, synced", [(False, 0), (True, 2)])
def test_op_checkpoints_skip_the_fsync_and_a_crash_cut_file_is_recomputed(tmp_path, monkeypatch, durable, synced):
    """Op checkpoints are verified on load, so they skip the fsync; results (durable) keep it.
    What a machine crash can leave without an fsync (a short file, an empty manifest) is refused."""
    import os
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    store = Checkpoints(Storage(), str(tmp_path), durable=durable)
    store.write("k1", pa.table({"text": ["a", "bb"]}), 0, 1, ["x"])
    assert len(calls) == synced
    Path(store.data_path("k1")).write_bytes(b"")
    assert store.load("k1")[0] is None
    Path(store.manifest_path("k1")).write_bytes(b"")
    loaded, problem = store.load("k1")
    assert loaded is None and "manifest" in problem
