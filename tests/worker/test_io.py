"""Input formats, export formats and event-log rotation."""
from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq

from djworker.demo_data import rows
from djworker.events import EventLog, read_events
from tests.support.engine import dj_process, events, make_recipe, output_rows
from tests.support.engine import expected_rows


def test_gzip_jsonl_in_parquet_out(tmp_path):
    data = tmp_path / "in.jsonl.gz"
    with gzip.open(data, "wb") as fh:
        for r in rows(300):
            fh.write((json.dumps(r) + "\n").encode())
    out = tmp_path / "out.parquet"
    recipe = make_recipe(tmp_path, dataset_path=str(data), export_path=str(out))
    assert dj_process(recipe, "g").returncode == 0
    plain = tmp_path / "plain"
    plain.mkdir()
    ref = make_recipe(plain, rows=300)
    assert pq.read_table(out).to_pylist() == expected_rows(ref)


def test_parquet_directory_input_keeps_file_then_row_order(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    all_rows = list(rows(250))
    pq.write_table(pa.Table.from_pylist(all_rows[:100]), d / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(all_rows[100:]), d / "part-1.parquet")
    recipe = make_recipe(tmp_path, dataset_path=str(d), process=[{"text_length_filter": {"min_len": 0}}],
                         partition={"size": 60})
    assert dj_process(recipe, "p").returncode == 0
    assert [r["id"] for r in output_rows(tmp_path / "out" / "result.jsonl")] == list(range(250))


def test_mixed_field_types_survive_unchanged(tmp_path):
    data = tmp_path / "input.jsonl"
    recs = [{"text": "a " * 30, "meta": {"lang": "en"}}, {"text": "b " * 30, "meta": "free text"}, {"text": "c " * 30}]
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    recipe = make_recipe(tmp_path, process=[{"whitespace_normalization_mapper": {}}])
    assert dj_process(recipe, "m").returncode == 0
    got = output_rows(tmp_path / "out" / "result.jsonl")
    assert [r.get("meta") for r in got] == [{"lang": "en"}, "free text", None]


def test_event_log_rotates_and_readers_see_every_event_in_order(tmp_path):
    log = EventLog(str(tmp_path), "rot", max_log_size_mb=0.002, backup_count=50)
    for i in range(200):
        log.emit("INFO", message=f"event {i}")
    log.close()
    assert len(list(tmp_path.glob("events.jsonl.*"))) >= 3
    assert [e["message"] for e in read_events(str(tmp_path))] == [f"event {i}" for i in range(200)]


def test_stats_export_as_datajuicer_does(tmp_path):
    recipe = make_recipe(tmp_path, rows=100, export_stats=True,
                         process=[{"text_length_filter": {"min_len": 100}}, {"words_num_filter": {"min_num": 5}}])
    assert dj_process(recipe, "s").returncode == 0
    stats = [json.loads(line) for line in (tmp_path / "out" / "result_stats.jsonl").read_text().splitlines()]
    out = output_rows(tmp_path / "out" / "result.jsonl")
    assert len(stats) == len(out) and all({"text_len", "num_words"} <= set(s) for s in stats)
    assert all(s["text_len"] == len(r["text"]) for s, r in zip(stats, out))
    assert "__dj__stats__" not in out[0]


def test_planning_syncs_its_partition_files_once_not_per_file(tmp_path, monkeypatch):
    """Many small partition files: one syncfs before the plan is saved, no fsync per file."""
    import os

    from djworker.demo_data import write_jsonl
    from djworker.plan import build_plan
    from djworker.storage import Storage

    write_jsonl(str(tmp_path / "in.jsonl"), 200)
    fsyncs, syncs = [], []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))
    storage = Storage()
    real_sync = storage.sync
    monkeypatch.setattr(storage, "sync", lambda uri: (syncs.append(uri), real_sync(uri)))
    plan = build_plan(storage, "j", str(tmp_path / "in.jsonl"), "text", 10, 64.0, str(tmp_path / "job"),
                      str(tmp_path / "rejects.jsonl"), lambda r: None)
    assert len(plan.partitions) == 20 and sum(p.sample_count for p in plan.partitions) == 200
    assert fsyncs == [] and syncs == [str(tmp_path / "job" / "partitions")]
    assert all(os.path.getsize(p.path) > 0 for p in plan.partitions)


def test_a_suffix_filter_recipe_gets_datajuicers_suffix_column_from_the_input_files(tmp_path):
    """As DataJuicer's loader does when a recipe has a suffix_filter: each row's __dj__suffix__ is
    its file's suffix (two for a compressed file), kept in the output; rejects do not shift it."""
    from djworker.sources import file_suffix

    assert [file_suffix(p) for p in ("a/x.jsonl", "b.JSON", "c.jsonl.gz", "d.jsonl.zst", "e.parquet")] == \
        [".jsonl", ".json", ".jsonl.gz", ".jsonl.zst", ".parquet"]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"text": "from a"}\nnot json\n{"text": "again a"}\n')
    with gzip.open(folder / "b.jsonl.gz", "wt") as fh:
        fh.write('{"text": "from b"}\n')
    out = tmp_path / "out.jsonl"
    recipe = make_recipe(tmp_path, dataset_path=str(folder), export_path=str(out), malformed_records="reject",
                         process=[{"suffix_filter": {"suffixes": [".jsonl.gz", ".jsonl"]}}])
    assert dj_process(recipe, "s").returncode == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert got == [{"text": "from a", "__dj__suffix__": ".jsonl"}, {"text": "again a", "__dj__suffix__": ".jsonl"},
                   {"text": "from b", "__dj__suffix__": ".jsonl.gz"}]
    (tmp_path / "gz").mkdir()
    only_gz = make_recipe(tmp_path / "gz", dataset_path=str(folder), export_path=str(tmp_path / "gz.jsonl"),
                          malformed_records="reject", process=[{"suffix_filter": {"suffixes": [".jsonl.gz"]}}])
    assert dj_process(only_gz, "g").returncode == 0
    assert [json.loads(x)["text"] for x in (tmp_path / "gz.jsonl").read_text().splitlines()] == ["from b"]
