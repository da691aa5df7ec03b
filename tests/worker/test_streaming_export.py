"""Streaming export: shards appended in partition order while the job runs, resumed after kills."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pyarrow as pa
import pytest

from djworker.checkpoint import Checkpoints
from djworker.export import StreamingExport, can_stream
from djworker.storage import Storage, StorageOptions
from tests.support.engine import dj_process, events, expected_rows, make_recipe, output_rows

SCHEMA = pa.schema([("text", pa.string())])


def shards(tmp: Path, n: int) -> tuple[Checkpoints, list[str], list[bytes]]:
    store = Checkpoints(Storage(StorageOptions()), str(tmp / "results"), "jsonl", "none")
    keys, datas = [], []
    for i in range(n):
        data = b"".join(b'{"text":"p%d r%d"}\n' % (i, r) for r in range(i + 1))
        key = f"partition_{i:06d}_op001_k"
        store.write_encoded(key, data, i + 1, SCHEMA, i, 1, ["op"])
        keys.append(key)
        datas.append(data)
    return store, keys, datas


def streaming(tmp: Path, store: Checkpoints, keys: list[str]) -> StreamingExport:
    return StreamingExport(store.storage, store, keys, str(tmp / "out" / "o.jsonl"), "j")


def test_appends_in_partition_order_whatever_order_partitions_finish(tmp_path):
    store, keys, datas = shards(tmp_path, 4)
    s = streaming(tmp_path, store, keys)
    for i in (2, 0, 3, 1):
        s.mark_ready(keys[i])
    manifest = s.finish()
    out = tmp_path / "out" / "o.jsonl"
    assert out.read_bytes() == b"".join(datas)
    assert manifest["rows"] == 1 + 2 + 3 + 4 and manifest["partitions"] == 4
    assert sorted(p.name for p in out.parent.iterdir()) == ["o.jsonl", "o.jsonl.manifest.json"]


def test_a_later_run_truncates_a_torn_tail_and_appends_only_what_is_missing(tmp_path):
    store, keys, datas = shards(tmp_path, 4)
    first = streaming(tmp_path, store, keys)
    first.mark_ready(keys[0])
    first.mark_ready(keys[1])
    first.close()  # a stop: the partial and its sidecar stay
    partial = tmp_path / "out" / "o.jsonl.partial-j"
    assert partial.read_bytes() == datas[0] + datas[1]
    assert json.loads(Path(str(partial) + ".json").read_text())["keys"] == keys[:2]
    with open(partial, "ab") as fh:  # a run killed mid-append leaves bytes past the recorded length
        fh.write(b'{"text":"torn')
    second = streaming(tmp_path, store, keys)
    assert second.reused == 2
    second.finish()
    assert (tmp_path / "out" / "o.jsonl").read_bytes() == b"".join(datas)
    assert not partial.exists() and not Path(str(partial) + ".json").exists()


def test_a_partial_made_for_other_shards_is_started_over(tmp_path):
    store, keys, datas = shards(tmp_path, 3)
    first = streaming(tmp_path, store, keys)
    first.mark_ready(keys[0])
    first.close()
    changed = [keys[0] + "x", *keys[1:]]  # e.g. an op parameter changed: other result keys
    store.write_encoded(changed[0], b'{"text":"new"}\n', 1, SCHEMA, 0, 1, ["op"])
    second = streaming(tmp_path, store, changed)
    assert second.reused == 0
    second.finish()
    assert (tmp_path / "out" / "o.jsonl").read_bytes() == b'{"text":"new"}\n' + datas[1] + datas[2]


def test_a_corrupt_shard_fails_the_export_and_publishes_nothing(tmp_path):
    store, keys, _ = shards(tmp_path, 2)
    path = Path(store.data_path(keys[1]))
    path.write_bytes(path.read_bytes().replace(b"p1", b"p9"))
    s = streaming(tmp_path, store, keys)
    with pytest.raises(ValueError, match="content hash mismatch"):
        s.finish()
    assert not (tmp_path / "out" / "o.jsonl").exists()


@pytest.mark.parametrize("path, streams", [("/d/o.jsonl", True), ("/d/o.json", True), ("/d/o.jsonl.gz", False),
                                           ("/d/o.parquet", False), ("s3://b/o.jsonl", False)])
def test_only_local_plain_jsonl_streams(path, streams):
    assert can_stream(path) is streams


def test_job_killed_mid_run_resumes_its_partial_export(tmp_path):
    recipe = make_recipe(tmp_path, rows=800, checkpoint={"strategy": "every_partition"})
    killed = dj_process(recipe, "s", env={"DJ_FAILPOINTS": "partition_done=6"})
    assert killed.returncode == -signal.SIGKILL
    out = tmp_path / "out" / "result.jsonl"
    partial = Path(f"{out}.partial-s")
    assert partial.exists() and not out.exists()
    sidecar = Path(f"{partial}.json")
    held = len(json.loads(sidecar.read_text())["keys"]) if sidecar.exists() else 0
    assert held <= 5  # only partitions whose results were committed
    assert dj_process(recipe, "s").returncode == 0
    assert output_rows(out) == expected_rows(recipe)
    exported = [e for e in events(tmp_path, "s") if e.get("export_path")][-1]
    assert exported["appended_by_earlier_runs"] == held
    assert not partial.exists() and not sidecar.exists()


def test_an_unwritable_export_directory_fails_before_any_work(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    recipe = make_recipe(tmp_path, rows=200, export_path=str(blocker / "out.jsonl"))
    proc = dj_process(recipe, "u")
    assert proc.returncode == 5 and "a_file" in proc.stderr
    assert not [e for e in events(tmp_path, "u") if e["event_type"] == "PARTITION_START"]
