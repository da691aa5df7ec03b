"""DataJuicer global keys implemented here: suffixes, keep_stats_in_res_ds, export_shard_size, text_keys lists."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from djworker.demo_data import rows
from djworker.export import shard_paths
from tests.support.engine import dj_process, make_recipe, output_rows


def run_ok(recipe: Path, job: str, env=None):
    done = dj_process(recipe, job, env=env)
    assert done.returncode == 0, done.stderr
    return done


def test_suffixes_narrow_a_directory_to_those_files(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    jsonl = list(rows(30, 1))
    (data / "a.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in jsonl))
    pq.write_table(pa.Table.from_pylist(list(rows(20, 2))), data / "b.parquet")
    recipe = make_recipe(tmp_path, dataset_path=str(data), suffixes=["jsonl"], process=[{"text_length_filter": {"min_len": 0}}])
    run_ok(recipe, "s")
    assert [r["text"] for r in output_rows(tmp_path / "out" / "result.jsonl")] == [r["text"] for r in jsonl]
    both = make_recipe(tmp_path, name="both", dataset_path=str(data), export_path=str(tmp_path / "both.jsonl"),
                       process=[{"text_length_filter": {"min_len": 0}}])
    run_ok(both, "b")
    assert len(output_rows(tmp_path / "both.jsonl")) == 50


def test_keep_stats_in_res_ds_keeps_the_stats_column(tmp_path):
    recipe = make_recipe(tmp_path, rows=60, keep_stats_in_res_ds=True,
                         process=[{"text_length_filter": {"min_len": 100, "max_len": 600}}])
    run_ok(recipe, "k")
    out = output_rows(tmp_path / "out" / "result.jsonl")
    assert out and all(r["__dj__stats__"]["text_len"] == len(r["text"]) for r in out)
    plain = make_recipe(tmp_path, name="plain", export_path=str(tmp_path / "plain.jsonl"),
                        process=[{"text_length_filter": {"min_len": 100, "max_len": 600}}])
    run_ok(plain, "p")
    assert [r["text"] for r in output_rows(tmp_path / "plain.jsonl")] == [r["text"] for r in out]
    assert "__dj__stats__" not in output_rows(tmp_path / "plain.jsonl")[0]


def sharded(tmp: Path, export: Path) -> list[dict]:
    manifest = json.loads(Path(str(export) + ".manifest.json").read_text())
    assert manifest["shards"] == shard_paths(str(export), len(manifest["shards"]))
    got = [r for p in manifest["shards"] for r in output_rows(Path(p))]
    assert manifest["rows"] == len(got)
    return got


def test_export_shard_size_splits_the_export_in_order(tmp_path):
    whole = make_recipe(tmp_path, rows=400, name="whole", export_path=str(tmp_path / "whole.jsonl"))
    run_ok(whole, "w")
    expected = output_rows(tmp_path / "whole.jsonl")
    export = tmp_path / "out" / "result.jsonl"
    recipe = make_recipe(tmp_path, rows=400, export_shard_size=20_000, export_path=str(export))
    run_ok(recipe, "s")
    manifest = json.loads(Path(str(export) + ".manifest.json").read_text())
    assert len(manifest["shards"]) > 2 and not export.exists()
    assert all(Path(p).stat().st_size <= 20_000 for p in manifest["shards"])
    assert sharded(tmp_path, export) == expected


def test_sharded_export_killed_mid_write_resumes_exactly_once(tmp_path):
    export = tmp_path / "out" / "result.jsonl"
    recipe = make_recipe(tmp_path, rows=400, export_shard_size=20_000, export_path=str(export))
    killed = dj_process(recipe, "k", env={"DJ_FAILPOINTS": "export_mid_write=3"})
    assert killed.returncode == -signal.SIGKILL
    assert not Path(str(export) + ".manifest.json").exists()
    assert not list((tmp_path / "out").glob("result-*-of-*.jsonl")), "no shard is visible before all are written"
    run_ok(recipe, "k")
    whole = make_recipe(tmp_path, rows=400, name="whole", export_path=str(tmp_path / "whole.jsonl"))
    run_ok(whole, "w")
    assert sharded(tmp_path, export) == output_rows(tmp_path / "whole.jsonl")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [Path(p).name for p in json.loads(Path(str(export) + ".manifest.json").read_text())["shards"]]
        + ["result.jsonl.manifest.json"])


def test_sharded_parquet_export(tmp_path):
    export = tmp_path / "out" / "result.parquet"
    recipe = make_recipe(tmp_path, rows=300, export_shard_size=10_000, export_path=str(export))
    run_ok(recipe, "p")
    manifest = json.loads(Path(str(export) + ".manifest.json").read_text())
    got = [r for p in manifest["shards"] for r in pq.read_table(p).to_pylist()]
    assert len(manifest["shards"]) > 1 and len(got) == manifest["rows"] > 0


def test_text_keys_list_uses_its_first_key(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_bytes(b"".join(orjson.dumps({"content": "  a  b ", "text": "  x "}) + b"\n" for _ in range(5)))
    recipe = make_recipe(tmp_path, dataset_path=str(data), text_keys=["content", "text"],
                         process=[{"whitespace_normalization_mapper": {}}])
    run_ok(recipe, "t")
    assert {(r["content"], r["text"]) for r in output_rows(tmp_path / "out" / "result.jsonl")} == {("a  b", "  x ")}
