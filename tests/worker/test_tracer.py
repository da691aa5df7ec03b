"""open_tracer: DataJuicer's trace files, per op kind, bounded, selected, and the same after a kill + resume."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from djworker.config import load_recipe
from djworker.demo_data import rows as demo_rows
from djworker.engine import run_job
from djworker.ops import build_op
from djworker.ops.dj_adapter import datajuicer_registry
from djworker.storage import Storage
from djworker.tracer import TraceSettings, duplicate_pairs, filter_records, mapper_records, merged, write_trace
from tests.support.engine import STANDARD_OPS, dj_process, event_types, events, make_recipe
from tests.support.ray import ray_runs  # noqa: F401  (fixture)

ROWS = [
    {"text": "mail a@b.com now", "id": "r0"},
    {"text": "plain", "id": "r1"},
    {"text": "x@y.org", "id": "r2"},
    {"text": "plain", "id": "r3"},
    {"text": "hi", "id": "r4"},
    {"text": "plain", "id": "r5"},
]
OPS = [{"clean_email_mapper": {}}, {"text_length_filter": {"min_len": 3}}, {"document_deduplicator": {}}]


def small_job(tmp: Path, job: str = "j", **overrides) -> Path:
    """Runs ROWS (2 rows a partition) through OPS in process; returns the job's trace directory."""
    data = tmp / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    recipe = {"dataset_path": str(data), "export_path": str(tmp / "out.jsonl"), "work_dir": str(tmp / "work"),
              "np": 1, "partition": {"size": 2}, "open_tracer": True, "process": OPS, **overrides}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    outcome = run_job(load_recipe(str(path)), job_id=job)
    assert outcome.status == "completed", outcome.error
    return tmp / "work" / job / "trace"


def trace_files(trace_dir: Path) -> dict[str, list[dict]]:
    if not trace_dir.exists():
        return {}
    return {f.name: [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines()]
            for f in sorted(trace_dir.iterdir())}


# ---- core ------------------------------------------------------------------------------


def test_mapper_records_are_changed_rows_with_trace_keys_first_and_bounded():
    before = pa.table({"text": ["a", "b", None, "d", "e"], "id": [1, 2, 3, 4, 5]})
    after = pa.table({"text": ["a", "B", "c", "D", "E"], "id": [1, 2, 3, 4, 5]})
    records = mapper_records(before, after, "text", ["id", "missing"], limit=3)
    assert records == [
        {"id": 2, "missing": None, "original_text": "b", "processed_text": "B"},
        {"id": 3, "missing": None, "original_text": None, "processed_text": "c"},
        {"id": 4, "missing": None, "original_text": "d", "processed_text": "D"},
    ]
    assert list(records[0]) == ["id", "missing", "original_text", "processed_text"]
    assert mapper_records(before, before, "text", [], 10) == []
    assert mapper_records(before, after.slice(0, 4), "text", [], 10) == []  # row count changed: no pairing
    assert mapper_records(before, after, "text", [], 0) == []


def test_filter_records_are_removed_rows_whole_with_their_stats():
    op = build_op("text_length_filter", {"min_len": 3}, "test")
    judged, keep = op.judge(pa.table({"text": ["long enough", "no", "", "yes"], "id": ["a", "b", "c", "d"]}))
    assert filter_records(judged, keep, 10) == [
        {"text": "no", "id": "b", "__dj__stats__": {"text_len": 2}},
        {"text": "", "id": "c", "__dj__stats__": {"text_len": 0}},
    ]
    assert [r["id"] for r in filter_records(judged, keep, 1)] == ["b"]


def test_duplicate_pairs_one_per_group_in_order_of_first_duplicate():
    # rows 0..6: groups {0, 3, 5}, {1, 6}, {2, 4}; the first duplicates are 3, 4, 5(same group as 3), 6
    groups = np.array([0, 1, 2, 0, 2, 0, 1])
    assert duplicate_pairs(groups, 10) == [(0, 3), (2, 4), (1, 6)]
    assert duplicate_pairs(groups, 2) == [(0, 3), (2, 4)]
    assert duplicate_pairs(np.arange(4), 10) == []


@pytest.mark.parametrize("name", ["document_deduplicator", "document_simhash_deduplicator",
                                  "document_minhash_deduplicator"])
def test_dedup_groups_agree_with_its_drops(name):
    op = build_op(name, {}, "test")
    texts = ["the same words in this longer sentence here"] * 2 + ["other text entirely, not alike at all here"] * 3
    hashes = [op.hashes(pa.table({"text": texts[:2]})), op.hashes(pa.table({"text": texts[2:]}))]
    groups = op.groups(hashes)
    assert groups.tolist() == [0, 0, 2, 2, 2]
    assert op.duplicates(hashes) == [[1], [1, 2]]


def test_merged_keeps_recipe_then_partition_order_and_one_bound_per_file():
    ops = [build_op("clean_email_mapper", {}, "t"), build_op("text_length_filter", {}, "t"),
           build_op("clean_email_mapper", {}, "t")]
    pieces = [{0: [{"n": 1}], 1: [{"f": 1}, {"f": 2}], 2: [{"n": 5}]}, {0: [{"n": 2}, {"n": 3}], 1: [{"f": 3}]}]
    assert merged(ops, pieces, 4) == {
        "sample_trace-clean_email_mapper.jsonl": [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 5}],
        "sample_trace-text_length_filter.jsonl": [{"f": 1}, {"f": 2}, {"f": 3}],
    }
    assert merged(ops, pieces, 2)["sample_trace-clean_email_mapper.jsonl"] == [{"n": 1}, {"n": 2}]


def test_settings_select_ops_and_name_their_pieces():
    every, some = TraceSettings(), TraceSettings(ops=("text_length_filter",))
    assert every.traces("anything") and some.traces("text_length_filter") and not some.traces("clean_email_mapper")
    assert every.digest != TraceSettings(limit=3).digest != TraceSettings(keys=("id",)).digest


# ---- a whole job -------------------------------------------------------------------------

# ROWS through OPS by hand: the mapper empties r0's and r2's addresses; the filter (min_len 3)
# removes r2 (now "") and r4 ("hi"); the deduplicator keeps r1 and drops r3 and r5, one group.
EXPECTED = {
    "sample_trace-clean_email_mapper.jsonl": [
        {"original_text": "mail a@b.com now", "processed_text": "mail  now"},
        {"original_text": "x@y.org", "processed_text": ""},
    ],
    "sample_trace-text_length_filter.jsonl": [
        {"text": "", "id": "r2", "__dj__stats__": {"text_len": 0}},
        {"text": "hi", "id": "r4", "__dj__stats__": {"text_len": 2}},
    ],
    "duplicate-document_deduplicator.jsonl": [
        {"dup1": {"text": "plain", "id": "r1", "__dj__stats__": {"text_len": 5}},
         "dup2": {"text": "plain", "id": "r3", "__dj__stats__": {"text_len": 5}}},
    ],
}


def test_each_op_kind_writes_datajuicers_file_and_records(tmp_path):
    trace = small_job(tmp_path)
    assert trace_files(trace) == EXPECTED


def test_trace_keys_come_first_in_mapper_records(tmp_path):
    got = trace_files(small_job(tmp_path, trace_keys=["id"]))["sample_trace-clean_email_mapper.jsonl"]
    assert got == [{"id": "r0", **EXPECTED["sample_trace-clean_email_mapper.jsonl"][0]},
                   {"id": "r2", **EXPECTED["sample_trace-clean_email_mapper.jsonl"][1]}]
    assert list(got[0]) == ["id", "original_text", "processed_text"]


def test_trace_num_bounds_every_file_to_the_first_records(tmp_path):
    got = trace_files(small_job(tmp_path, trace_num=1))
    assert got == {name: records[:1] for name, records in EXPECTED.items()}


def test_op_list_to_trace_selects_the_ops(tmp_path):
    got = trace_files(small_job(tmp_path, op_list_to_trace=["text_length_filter", "document_deduplicator"]))
    assert got == {k: v for k, v in EXPECTED.items() if "clean_email" not in k}


def test_nothing_is_written_or_kept_with_open_tracer_off(tmp_path):
    small_job(tmp_path, open_tracer=False)
    assert not (tmp_path / "work" / "j" / "trace").exists()
    assert not [p for p in (tmp_path / "work").rglob("trace_*")]


def test_each_job_keeps_its_own_trace_in_its_directory(tmp_path):
    first = small_job(tmp_path, job="first")
    second = small_job(tmp_path, job="second", op_list_to_trace=["text_length_filter"])
    assert trace_files(first) == EXPECTED
    name = "sample_trace-text_length_filter.jsonl"
    assert trace_files(second) == {name: EXPECTED[name]}


def with_duplicates(path: Path, n: int) -> None:
    """The demo corpus with a copy of row i-4 after every row i with i % 9 == 4 (make_recipe keeps it)."""
    corpus = list(demo_rows(n))
    lines = []
    for i, row in enumerate(corpus):
        lines.append(row)
        if i % 9 == 4:
            lines.append({**corpus[i - 4], "id": 1000 + i})
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")


def test_kill_and_resume_gives_the_same_trace_as_one_run(tmp_path):
    ops = STANDARD_OPS[:2] + [{"text_length_filter": {"min_len": 200, "max_len": 600}},
                              {"document_deduplicator": {"lowercase": True}}, {"clean_links_mapper": {}}]
    # trace_num above what the mappers change: every partition's records are in the files
    settings = dict(rows=300, open_tracer=True, trace_num=100, trace_keys=["id"], process=ops,
                    checkpoint={"strategy": "every_n_ops", "n_ops": 2})
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for tmp in (whole, killed):
        tmp.mkdir()
        with_duplicates(tmp / "input.jsonl", 300)
    assert dj_process(make_recipe(whole, **settings), "w").returncode == 0
    recipe = make_recipe(killed, **settings)
    assert dj_process(recipe, "k", env={"DJ_FAILPOINTS": "op_done=7"}).returncode == -signal.SIGKILL
    resumed = dj_process(recipe, "k")
    assert resumed.returncode == 0, resumed.stderr
    after = events(killed, "k")
    after = after[event_types(after).index("JOB_RESUMED"):]
    assert "CHECKPOINT_LOAD" in event_types(after), "a partition went on from its checkpoint, skipping traced ops"
    expected = trace_files(whole / "jobs" / "w" / "trace")
    assert set(expected) >= {"sample_trace-clean_email_mapper.jsonl", "sample_trace-text_length_filter.jsonl",
                             "duplicate-document_deduplicator.jsonl"}
    assert 0 < len(expected["sample_trace-clean_email_mapper.jsonl"]) < 100
    assert all(len(records) <= 100 for records in expected.values())
    assert trace_files(killed / "jobs" / "k" / "trace") == expected


def test_tracing_switched_on_at_resume_says_which_partitions_miss_records(tmp_path):
    with_duplicates(tmp_path / "input.jsonl", 300)
    recipe = make_recipe(tmp_path, checkpoint={"strategy": "every_op"})
    assert dj_process(recipe, "late", env={"DJ_FAILPOINTS": "op_done=8"}).returncode == -signal.SIGKILL
    traced = make_recipe(tmp_path, name="traced", checkpoint={"strategy": "every_op"}, open_tracer=True)
    resumed = dj_process(traced, "late")
    assert resumed.returncode == 0, resumed.stderr
    warned = [e for e in events(tmp_path, "late") if e["event_type"] == "WARNING" and "tracer" in e["message"]]
    assert len(warned) == 1 and warned[0]["partitions"]
    assert trace_files(tmp_path / "jobs" / "late" / "trace")  # what could be traced still is


def test_ray_executor_writes_the_same_trace_as_the_local_one(tmp_path, ray_runs):
    ops = [*STANDARD_OPS[:2], {"text_length_filter": {"min_len": 200}}, {"document_deduplicator": {}}]
    trace = {}
    for executor in ("local", "ray"):
        (tmp_path / executor).mkdir()
        with_duplicates(tmp_path / executor / "input.jsonl", 300)
        recipe = make_recipe(tmp_path / executor, process=ops, executor_type=executor, open_tracer=True, trace_num=50)
        if executor == "ray":
            run = ray_runs(recipe, "j")
            assert run.finish() == 0, run.output
        else:
            assert dj_process(recipe, "j").returncode == 0
        trace[executor] = trace_files(tmp_path / executor / "jobs" / "j" / "trace")
    assert len(trace["local"]) == 4 and trace["ray"] == trace["local"]


def test_op_list_to_trace_naming_an_op_the_recipe_lacks_is_warned_once(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "x"}\n')
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"dataset_path": str(data), "open_tracer": True,
                                    "op_list_to_trace": ["text_length_filter", "clean_emial_mapper"],
                                    "process": [{"text_length_filter": {}}]}))
    warnings = load_recipe(str(path)).compat_warnings
    assert [w for w in warnings if "op_list_to_trace" in w] == [
        "op_list_to_trace names 'clean_emial_mapper', which this recipe's process list does not use: "
        "nothing is traced for them"]


def test_a_first_op_deduplicator_takes_its_pairs_from_the_input_partitions(tmp_path):
    got = trace_files(small_job(tmp_path, process=[{"document_deduplicator": {}}]))
    assert got == {"duplicate-document_deduplicator.jsonl": [
        {"dup1": {"text": "plain", "id": "r1"}, "dup2": {"text": "plain", "id": "r3"}}]}


def test_writing_replaces_an_earlier_runs_tracer_files_and_leaves_others(tmp_path):
    trace = tmp_path / "trace"
    trace.mkdir()
    (trace / "sample_trace-gone_mapper.jsonl").write_text("{}\n")
    (trace / "duplicate-document_deduplicator.jsonl").write_text("{}\n")
    (trace / "notes.txt").write_text("mine")
    write_trace(Storage(), str(tmp_path), {"duplicate-document_deduplicator.jsonl": [{"dup1": "é", "dup2": None}]})
    assert sorted(p.name for p in trace.iterdir()) == ["duplicate-document_deduplicator.jsonl", "notes.txt"]
    assert (trace / "duplicate-document_deduplicator.jsonl").read_bytes() == '{"dup1":"é","dup2":null}\n'.encode()


@pytest.mark.parametrize("limit", [1, 2])
def test_ops_run_batch_by_batch_give_the_same_trace(tmp_path, limit):
    # one partition of 6 rows, ops called on batches of 1 row: records accumulate across batches, bounded
    batched = small_job(tmp_path, partition={"size": 6}, trace_num=limit,
                        intermediate_storage={"use_arrow_batches": True, "arrow_batch_size": 1})
    assert trace_files(batched) == {name: records[:limit] for name, records in EXPECTED.items()}


@pytest.mark.skipif(datajuicer_registry() is None, reason="py-data-juicer (optional extra) is not installed")
def test_a_datajuicer_mapper_run_through_the_adapter_is_traced(tmp_path):
    from data_juicer.ops import OPERATORS

    reference = OPERATORS.modules["pii_redaction_mapper"]()
    texts = [r["text"] for r in ROWS]
    redacted = reference.process_batched({"text": list(texts)})["text"]
    expected = [{"id": r["id"], "original_text": old, "processed_text": new}
                for r, old, new in zip(ROWS, texts, redacted) if old != new]
    assert expected, "the reference op changes some rows"
    got = trace_files(small_job(tmp_path, process=[{"pii_redaction_mapper": {}}], trace_keys=["id"]))
    assert got == {"sample_trace-pii_redaction_mapper.jsonl": expected}


def test_trace_pieces_live_with_checkpoints_on_s3(tmp_path, s3_bucket):
    import s3fs

    got = trace_files(small_job(tmp_path, checkpoint_dir=f"s3://{s3_bucket}/ckpt"))
    assert got == EXPECTED
    fs = s3fs.S3FileSystem()
    pieces = [p for p in fs.find(f"{s3_bucket}/ckpt") if p.rsplit("/", 1)[1].startswith("trace_")]
    assert any("trace_dedup_op002_" in p for p in pieces) and any("trace_partition_000002_" in p for p in pieces)
