"""The DataJuicer text ops added beside the first set, through dj-process on real files:
partitioned and checkpointed, and text_chunk_mapper (which turns one row into several)
resuming exactly once after a kill."""
from __future__ import annotations

import signal
from pathlib import Path

from tests.support.engine import dj_process, event_types, events, expected_rows, make_recipe, output_rows

EVERY_NEW_OP = [
    {"expand_macro_mapper": {}},
    {"remove_words_with_incorrect_substrings_mapper": {}},
    {"replace_content_mapper": {"pattern": ["check", "r'\\s+'"], "repl": ["CHECK", " "]}},
    {"remove_non_chinese_character_mapper": {"keep_punc": True}},
    {"chinese_convert_mapper": {"mode": "s2t"}},
    {"python_lambda_mapper": {"lambda_str": "lambda s: {'text': s['text'].upper(), 'n': len(s['text'])}"}},
    {"python_file_mapper": {"file_path": "FNS", "function_name": "tag"}},
    {"specified_numeric_field_filter": {"field_key": "n", "min_value": 10}},
    {"general_field_filter": {"filter_condition": "id >= 5 and id not in [7, 8]"}},
    {"text_chunk_mapper": {"max_len": 60, "overlap_len": 10, "split_pattern": " "}},
]


def out_path(tmp: Path) -> Path:
    return tmp / "out" / "result.jsonl"


def test_every_new_op_runs_partitioned_and_checkpointed_like_the_floor(tmp_path):
    (tmp_path / "fns.py").write_text("def tag(sample):\n    return {'tag': 'p' + str(sample['id'] % 3)}\n")
    ops = [{k: ({**v, "file_path": str(tmp_path / "fns.py")} if k == "python_file_mapper" else v)} for op in EVERY_NEW_OP
           for k, v in op.items()]
    recipe = make_recipe(tmp_path, rows=300, process=ops, checkpoint={"strategy": "every_op"})
    proc = dj_process(recipe, "all")
    assert proc.returncode == 0, proc.stderr
    rows = output_rows(out_path(tmp_path))
    assert rows == expected_rows(recipe)
    assert len(rows) > 300  # the chunks outnumber the input rows
    assert {r["tag"] for r in rows} == {"p0", "p1", "p2"} and all(r["id"] >= 5 and r["id"] not in (7, 8) for r in rows)
    assert all(len(r["text"]) <= 60 and r["text"] == r["text"].upper() for r in rows)


def test_text_chunk_mapper_resumes_exactly_once_after_a_kill(tmp_path):
    ops = [
        {"whitespace_normalization_mapper": {}},
        {"text_chunk_mapper": {"max_len": 80, "split_pattern": " "}},
        {"text_length_filter": {"min_len": 5}},
        {"clean_links_mapper": {}},
    ]
    recipe = make_recipe(tmp_path, rows=400, process=ops, checkpoint={"strategy": "every_op"})
    killed = dj_process(recipe, "c", env={"DJ_FAILPOINTS": "op_done=6"})
    assert killed.returncode == -signal.SIGKILL
    assert not out_path(tmp_path).exists()
    proc = dj_process(recipe, "c")
    assert proc.returncode == 0, proc.stderr
    rows = output_rows(out_path(tmp_path))
    assert rows == expected_rows(recipe) and len(rows) > 400
    evs = events(tmp_path, "c")
    after = evs[event_types(evs).index("JOB_RESUMED"):]
    loads = [e for e in after if e["event_type"] == "CHECKPOINT_LOAD"]
    assert loads, "an interrupted partition continues from its checkpoint"
    started = [e for e in after if e["event_type"] == "OP_START"]
    for load in loads:  # no op covered by a loaded checkpoint runs again
        assert all(e["op_idx"] >= load["reused_ops"] for e in started if e["partition_id"] == load["partition_id"])
    # A checkpoint taken after the chunking holds the chunked rows: more rows out than in.
    chunk_done = [e for e in evs if e["event_type"] == "OP_COMPLETE" and e.get("op_name") == "text_chunk_mapper"]
    assert chunk_done and all(e["rows_out"] > e["rows_in"] for e in chunk_done)


def test_a_bad_parameter_is_a_recipe_error_naming_the_key_before_any_work(tmp_path):
    recipe = make_recipe(tmp_path, rows=50, process=[{"text_chunk_mapper": {"max_len": 10, "overlap_len": 10}}])
    proc = dj_process(recipe, "bad")
    assert proc.returncode != 0
    assert "text_chunk_mapper" in proc.stderr and "overlap_len (10) must be less than max_len (10)" in proc.stderr
    assert not out_path(tmp_path).exists()
