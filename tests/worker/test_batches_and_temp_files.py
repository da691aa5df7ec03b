"""intermediate_storage.use_arrow_batches / arrow_batch_size (ops see bounded batches, same rows)
and cleanup_temp_files (a resume removes what a killed writer left half-written)."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

import tests.support.test_ops  # noqa: F401  (registers the test ops here too)
from tests.support.engine import STANDARD_OPS, dj_process, events, expected_rows, make_recipe, output_rows


def batch_sizes(state: Path) -> list[int]:
    return [int(p.read_text()) for p in state.iterdir()]


@pytest.mark.parametrize("settings", [
    {"intermediate_storage": {"use_arrow_batches": True, "arrow_batch_size": 7}},
    {"use_arrow_batches": True, "arrow_batch_size": 7},  # the legacy flat keys
])
def test_arrow_batches_bound_what_an_op_sees_and_keep_the_output(tmp_path, settings):
    state = tmp_path / "batches"
    recipe = make_recipe(tmp_path, rows=600, process=[{"batch_probe_mapper": {"state_dir": str(state)}}, *STANDARD_OPS],
                         **settings)
    proc = dj_process(recipe, "b")
    assert proc.returncode == 0, proc.stderr
    sizes = batch_sizes(state)
    assert max(sizes) == 7 and sum(sizes) == 600 and len(sizes) == 6 * 15  # 100-row partitions: 14 x 7 + 2
    assert output_rows(tmp_path / "out" / "result.jsonl") == expected_rows(recipe)


def test_without_arrow_batches_an_op_sees_its_whole_partition(tmp_path):
    state = tmp_path / "batches"
    recipe = make_recipe(tmp_path, rows=600, process=[{"batch_probe_mapper": {"state_dir": str(state)}}],
                         intermediate_storage={"arrow_batch_size": 7})  # a size alone does not switch batching on
    assert dj_process(recipe, "w").returncode == 0
    assert sorted(batch_sizes(state)) == [100] * 6


def plant_temp_files(tmp: Path, job: str) -> tuple[list[Path], list[Path]]:
    """Files named like those a killed writer leaves, and look-alikes that must survive."""
    temp = [tmp / "ckpt" / job / "checkpoint_x.json.tmp-0123abcd",
            tmp / "jobs" / job / "partitions" / "partition_000001.parquet.tmp-deadbeef",
            tmp / "jobs" / job / ".dj-write-probe-0badcafe"]
    keep = [tmp / "ckpt" / job / "notes.tmp-notahex!", tmp / "jobs" / job / "a.tmp-0123abcd.txt",
            tmp / "out" / "other.jsonl.gz.tmp-0123abcd"]  # beside the export, but not the export's
    for path in [*temp, *keep]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half-written")
    return temp, keep


def test_a_resume_removes_the_temp_files_a_killed_run_left(tmp_path):
    recipe = make_recipe(tmp_path, rows=600, export_path=str(tmp_path / "out" / "result.jsonl.gz"))
    killed = dj_process(recipe, "t", env={"DJ_FAILPOINTS": "export_mid_write=3"})  # dies mid-export
    assert killed.returncode == -signal.SIGKILL
    [export_tmp] = (tmp_path / "out").glob("result.jsonl.gz.tmp-*")
    temp, keep = plant_temp_files(tmp_path, "t")
    proc = dj_process(recipe, "t")
    assert proc.returncode == 0, proc.stderr
    assert not export_tmp.exists() and not any(p.exists() for p in temp)
    assert all(p.exists() for p in keep)
    [info] = [e for e in events(tmp_path, "t") if "temp files" in e.get("message", "")]
    assert sorted(info["removed"]) == sorted(str(p) for p in [export_tmp, *temp])
    import gzip
    rows = [json.loads(line) for line in gzip.decompress((tmp_path / "out" / "result.jsonl.gz").read_bytes()).splitlines()]
    assert rows == expected_rows(recipe)


def test_cleanup_temp_files_false_leaves_them(tmp_path):
    recipe = make_recipe(tmp_path, rows=200, intermediate_storage={"cleanup_temp_files": False})
    assert dj_process(recipe, "k").returncode == 0
    temp, _ = plant_temp_files(tmp_path, "k")
    assert dj_process(recipe, "k").returncode == 0
    assert all(p.exists() for p in temp)
    assert not [e for e in events(tmp_path, "k") if "temp files" in e.get("message", "")]
