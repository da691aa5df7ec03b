"""Deduplicators run as a checkpointed global stage: same survivors as one whole-dataset pass."""
from __future__ import annotations

import signal

import orjson
import pytest

from tests.support.engine import dj_process, event_types, events, make_recipe, output_rows
from tests.support.engine import expected_rows


def corpus(tmp_path, n=400):
    """Rows with duplicates spread across partitions, including near-duplicates."""
    lines = []
    for i in range(n):
        base = f"document number {i % 37} talks about data cleaning pipelines and fault tolerance at scale"
        text = base.upper() if i % 5 == 0 else base
        if i % 7 == 0:
            text += " with an extra tail"
        lines.append(orjson.dumps({"text": text, "id": i}))
    (tmp_path / "input.jsonl").write_bytes(b"\n".join(lines) + b"\n")


RECIPES = {
    "exact": [{"clean_links_mapper": {}}, {"document_deduplicator": {"lowercase": True}},
              {"text_length_filter": {"min_len": 10}}],
    "simhash": [{"document_simhash_deduplicator": {"tokenization": "space", "window_size": 3}},
                {"whitespace_normalization_mapper": {}}],
    "minhash_then_exact": [{"document_minhash_deduplicator": {"tokenization": "space", "window_size": 3}},
                           {"clean_email_mapper": {}}, {"document_deduplicator": {}}],
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_global_dedup_matches_a_single_whole_dataset_pass(tmp_path, name):
    corpus(tmp_path)
    recipe = make_recipe(tmp_path, process=RECIPES[name], partition={"size": 50})
    proc = dj_process(recipe, "d")
    assert proc.returncode == 0, proc.stderr
    got = output_rows(tmp_path / "out" / "result.jsonl")
    assert got == expected_rows(recipe)
    assert len(got) < 400  # something really was deduplicated across partitions
    evs = events(tmp_path, "d")
    decisions = [e for e in evs if e["event_type"] == "CHECKPOINT_SAVE" and e.get("partition_id") is None]
    assert len(decisions) == sum("deduplicator" in next(iter(op)) for op in RECIPES[name])


@pytest.mark.parametrize("failpoint", ["partition_done=9", "partition_done=12", "op_done=9", "export_mid_write=3"])
def test_kill_during_any_dedup_phase_then_resume_is_identical(tmp_path, failpoint):
    corpus(tmp_path)
    recipe = make_recipe(tmp_path, process=RECIPES["exact"], partition={"size": 50})
    assert dj_process(recipe, "k", env={"DJ_FAILPOINTS": failpoint}).returncode == -signal.SIGKILL
    proc = dj_process(recipe, "k")
    assert proc.returncode == 0, proc.stderr
    assert output_rows(tmp_path / "out" / "result.jsonl") == expected_rows(recipe)
    assert event_types(events(tmp_path, "k"))[-1] == "JOB_COMPLETE"


def test_resume_after_the_decision_reuses_it(tmp_path):
    corpus(tmp_path)
    recipe = make_recipe(tmp_path, process=RECIPES["exact"], partition={"size": 50})
    # 8 partitions: stage 0 completes 8, the decision is made, then the kill lands in stage 1
    assert dj_process(recipe, "r", env={"DJ_FAILPOINTS": "partition_done=11"}).returncode == -signal.SIGKILL
    assert dj_process(recipe, "r").returncode == 0
    evs = events(tmp_path, "r")
    after = evs[event_types(evs).index("JOB_RESUMED"):]
    assert any(e["event_type"] == "CHECKPOINT_LOAD" and e.get("partition_id") is None for e in after)
    assert not any(e["event_type"] == "OP_START" and e.get("partition_id") is None for e in after)
    assert output_rows(tmp_path / "out" / "result.jsonl") == expected_rows(recipe)
