"""Selectors run as a checkpointed global stage: the rows of one whole-dataset pass, whatever the
partitioning, and the same rows after a kill and a resume as without one."""
from __future__ import annotations

import random
import signal

import orjson
import pytest

from tests.support.engine import dj_process, event_types, events, expected_rows, make_recipe, output_rows
from tests.support.ray import ray_runs, wait_gone  # noqa: F401  (ray_runs: a fixture)


def corpus(tmp_path, n=400):
    """Rows with a nested meta (language, score) and texts of many lengths."""
    rng = random.Random(16)
    words = "data juicer selects rows by field values across every partition of the input".split()
    lines = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 30)))
        if i % 9 == 0:
            text += " see https://example.com/page"
        meta = {"lang": rng.choice(["en", "en", "zh", "fr", "de"]), "score": rng.choice([1, 2, 2.5, 3, 8, 13])}
        lines.append(orjson.dumps({"text": text, "id": i, "meta": meta}))
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "input.jsonl").write_bytes(b"\n".join(lines) + b"\n")


FILTER = {"text_length_filter": {"min_len": 20}}
RECIPES = {
    "random": [{"clean_links_mapper": {}}, {"random_selector": {"select_num": 150}}, FILTER],
    "random_ratio": [{"clean_links_mapper": {}}, {"random_selector": {"select_ratio": 0.3, "select_num": 200}},
                     FILTER],
    "topk_on_stats": [{"whitespace_normalization_mapper": {}}, {"words_num_filter": {"min_num": 3}},
                      {"topk_specified_field_selector": {"field_key": "__dj__stats__.num_words", "topk": 90}},
                      FILTER],
    "range": [{"clean_links_mapper": {}},
              {"range_specified_field_selector": {"field_key": "meta.score", "lower_percentile": 0.2,
                                                  "upper_percentile": 0.7}}, FILTER],
    "frequency": [{"clean_links_mapper": {}},
                  {"frequency_specified_field_selector": {"field_key": "meta.lang", "topk": 2, "reverse": False}},
                  FILTER],
    "tags": [{"clean_links_mapper": {}}, {"tags_specified_field_selector": {"field_key": "meta.lang",
                                                                            "target_tags": ["fr", "de"]}}, FILTER],
    "selector_then_dedup": [{"clean_links_mapper": {}}, {"random_selector": {"select_ratio": 0.6}},
                            {"ray_bts_minhash_deduplicator": {"window_size": 3, "union_find_parallel_num": 8}},
                            FILTER],
}


def decisions(evs):
    return [e for e in evs if e["event_type"] == "CHECKPOINT_SAVE" and e.get("partition_id") is None]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_selector_stage_keeps_the_rows_of_one_whole_dataset_pass(tmp_path, name):
    corpus(tmp_path)
    recipe = make_recipe(tmp_path, process=RECIPES[name], partition={"size": 50})
    proc = dj_process(recipe, "s")
    assert proc.returncode == 0, proc.stderr
    got = output_rows(tmp_path / "out" / "result.jsonl")
    assert got == expected_rows(recipe)
    assert 0 < len(got) < 300  # the selector really chose, and the filter after it ran
    evs = events(tmp_path, "s")
    assert len(decisions(evs)) == sum(1 for op in RECIPES[name] if "selector" in next(iter(op))
                                      or "deduplicator" in next(iter(op)))
    assert any(e["event_type"] == "CHECKPOINT_SAVE" and e.get("partition_id") is not None for e in evs)
    assert len({e["partition_id"] for e in evs if e["event_type"] == "PARTITION_COMPLETE"}) == 8


def test_random_selection_does_not_depend_on_the_partitioning(tmp_path):
    outputs = []
    for size in (50, 130, 400):
        corpus(tmp_path / str(size))
        recipe = make_recipe(tmp_path / str(size), process=RECIPES["random"], partition={"size": size})
        assert dj_process(recipe, "p").returncode == 0
        outputs.append((tmp_path / str(size) / "out" / "result.jsonl").read_bytes())
    assert outputs[0] == outputs[1] == outputs[2] != b""


@pytest.mark.parametrize("failpoint", ["partition_done=5", "dedup_decide=1", "partition_done=11", "op_done=12",
                                       "export_mid_write=2"])
def test_a_killed_selector_job_resumes_to_the_uninterrupted_output(tmp_path, failpoint):
    for run in ("whole", "killed"):
        corpus(tmp_path / run)
    whole = make_recipe(tmp_path / "whole", process=RECIPES["random"], partition={"size": 50})
    assert dj_process(whole, "j").returncode == 0
    recipe = make_recipe(tmp_path / "killed", process=RECIPES["random"], partition={"size": 50})
    assert dj_process(recipe, "j", env={"DJ_FAILPOINTS": failpoint}).returncode == -signal.SIGKILL
    proc = dj_process(recipe, "j")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "killed/out/result.jsonl").read_bytes() == (tmp_path / "whole/out/result.jsonl").read_bytes()
    evs = events(tmp_path / "killed", "j")
    assert event_types(evs)[-1] == "JOB_COMPLETE" and "JOB_RESUMED" in event_types(evs)


def test_a_resume_after_the_selection_reuses_the_saved_decision(tmp_path):
    corpus(tmp_path)
    recipe = make_recipe(tmp_path, process=RECIPES["topk_on_stats"], partition={"size": 50})
    # 8 partitions: stage 0 completes 8, the selection is decided, then the kill lands in stage 1
    assert dj_process(recipe, "r", env={"DJ_FAILPOINTS": "partition_done=11"}).returncode == -signal.SIGKILL
    assert dj_process(recipe, "r").returncode == 0
    evs = events(tmp_path, "r")
    after = evs[event_types(evs).index("JOB_RESUMED"):]
    assert any(e["event_type"] == "CHECKPOINT_LOAD" and e.get("partition_id") is None
               and e["op_name"] == "topk_specified_field_selector" for e in after)
    assert not any(e["event_type"] == "OP_START" and e.get("partition_id") is None for e in after)
    assert output_rows(tmp_path / "out" / "result.jsonl") == expected_rows(recipe)


def test_a_field_no_row_has_fails_the_job_naming_it(tmp_path):
    corpus(tmp_path)
    ops = [{"tags_specified_field_selector": {"field_key": "meta.lnag", "target_tags": ["en"]}}]
    recipe = make_recipe(tmp_path, process=ops, partition={"size": 50})
    proc = dj_process(recipe, "f")
    assert proc.returncode != 0
    assert "'meta.lnag' is in no row" in events(tmp_path, "f")[-1]["error"]


def test_ray_executor_selects_the_same_rows_as_the_local_pool(tmp_path, ray_runs):
    for run in ("local", "ray"):
        corpus(tmp_path / run)
    local = make_recipe(tmp_path / "local", process=RECIPES["selector_then_dedup"], partition={"size": 50})
    assert dj_process(local, "j").returncode == 0
    recipe = make_recipe(tmp_path / "ray", process=RECIPES["selector_then_dedup"], partition={"size": 50},
                         executor_type="ray")
    run = ray_runs(recipe, "j")
    assert run.finish() == 0, run.output
    assert (tmp_path / "ray/out/result.jsonl").read_bytes() == (tmp_path / "local/out/result.jsonl").read_bytes()
    assert output_rows(tmp_path / "ray/out/result.jsonl") == expected_rows(recipe)
    assert len(decisions(events(tmp_path / "ray", "j"))) == 2
    assert wait_gone(run.ray_pids, 15) == {}, "the driver's local Ray outlived it"
