"""Selectors and ray_bts_minhash_deduplicator: the rows kept are DataJuicer 1.6.1's, over any
partitioning, and bad params fail naming the key.

tests/data/dj-selector-vectors/cases.json holds the rows DataJuicer's own selectors returned
on one corpus (tests/support/make_dj_selector_vectors.py). DataJuicer returns them in its
selection's order; the engine keeps input order, so the kept *set* is compared, in input order."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from djworker.errors import RecipeError
from djworker.ops.base import Selector
from djworker.ops.catalog import build_op, registered_ops
from djworker.ops.selectors import stats_to_number
from tests.worker.ops.test_dedup import partitions, through_parquet
from tests.worker.ops.vectors import VECTORS, load

CASES = json.loads((Path(__file__).resolve().parents[2] / "data" / "dj-selector-vectors" / "cases.json").read_text())
ROWS = CASES["rows"]


def kept_ids(op, slices: list[tuple[int, int]]) -> list[int]:
    """Ids kept when each slice is its own partition (its own inferred Arrow schema) and the
    row keys travel through Parquet as in the engine."""
    tables = [pa.Table.from_pylist(ROWS[lo:hi]) if hi > lo else pa.table({"id": pa.array([], pa.int64())})
              for lo, hi in slices]
    drops = op.drops([through_parquet(op.row_keys(t)) for t in tables])
    assert len(drops) == len(slices)
    return [t.column("id")[i].as_py() for t, drop in zip(tables, drops) for i in range(t.num_rows) if i not in drop]


def case_id(case) -> str:
    return case["op"].replace("_specified_field_selector", "") + "-" + ",".join(f"{k}={v}" for k, v in case["args"].items())


@pytest.mark.parametrize("case", CASES["cases"], ids=case_id)
@pytest.mark.parametrize("seed", [1, 2])
def test_selector_keeps_the_rows_datajuicer_keeps(case, seed):
    op = build_op(case["op"], case["args"], "process[0]")
    assert isinstance(op, Selector)
    expected = sorted(set(case["dj_ids"]))
    assert len(expected) == len(case["dj_ids"])  # DataJuicer repeated no row here
    assert kept_ids(op, [(0, len(ROWS))]) == expected
    assert kept_ids(op, partitions(len(ROWS), seed)) == expected
    whole = op.process(pa.Table.from_pylist(ROWS))  # the floor tests use process on one table
    assert whole.column("id").to_pylist() == expected


def test_the_vectors_exercise_real_selections():
    """The corpus makes every selector actually choose (not keep all, not keep none) somewhere."""
    for name in ("random_selector", "topk_specified_field_selector", "range_specified_field_selector",
                 "frequency_specified_field_selector", "tags_specified_field_selector"):
        sizes = {len(c["dj_ids"]) for c in CASES["cases"] if c["op"] == name}
        assert any(0 < s < len(ROWS) for s in sizes), name


def test_random_selection_is_numpy_default_rng_42_over_the_global_row_positions():
    op = build_op("random_selector", {"select_num": 10}, "t")
    chosen = sorted(np.random.default_rng(42).permutation(1000)[:10].tolist())
    sizes = [300, 0, 250, 450]
    keys = [pa.nulls(n) for n in sizes]
    drops = op.drops(keys)
    kept = [start + i for start, n, d in zip(np.cumsum([0] + sizes[:-1]), sizes, drops) for i in range(n) if i not in d]
    assert kept == chosen
    other = build_op("random_selector", {"select_num": 10, "seed": 7}, "t")
    assert other.drops(keys) != drops  # the seed decides it


def test_random_selector_at_or_over_the_row_count_keeps_every_row_once():
    for args in ({"select_num": 5}, {"select_num": 6}, {"select_num": 500}, {"select_ratio": 1.0}):
        assert build_op("random_selector", args, "t").drops([pa.nulls(2), pa.nulls(3)]) == [[], []]


def test_a_single_row_or_no_params_keeps_everything():
    assert build_op("random_selector", {"select_num": 1}, "t").drops([pa.nulls(1), pa.nulls(0)]) == [[], []]
    op = build_op("topk_specified_field_selector", {"field_key": "missing"}, "t")  # no topk/top_ratio
    table = pa.table({"text": ["a", "b", "c"]})
    assert op.process(table).num_rows == 3


def test_a_field_only_some_partitions_have_reads_as_none_there():
    op = build_op("tags_specified_field_selector", {"field_key": "meta.lang", "target_tags": ["en"]}, "t")
    with_field = pa.Table.from_pylist([{"meta": {"lang": "en"}}, {"meta": {"lang": "zh"}}])
    without = pa.Table.from_pylist([{"meta": {"other": 1}}, {"meta": {"other": 2}}])
    assert op.drops([through_parquet(op.row_keys(with_field)), through_parquet(op.row_keys(without))]) == [[1], [0, 1]]


def test_a_field_no_row_has_fails_naming_it():
    op = build_op("tags_specified_field_selector", {"field_key": "meta.lnag", "target_tags": ["en"]}, "t")
    table = pa.Table.from_pylist([{"meta": {"lang": "en"}}, {"meta": {"lang": "zh"}}])
    with pytest.raises(ValueError, match="'meta.lnag' is in no row"):
        op.process(table)


def test_non_scalar_values_cannot_be_counted_or_matched():
    op = build_op("frequency_specified_field_selector", {"field_key": "tags", "topk": 1}, "t")
    with pytest.raises(ValueError, match="row 0 is a list"):
        op.process(pa.table({"tags": [[1, 2], [3]]}))


def test_a_top_level_field_with_nulls_cannot_be_ordered_by_topk():
    op = build_op("topk_specified_field_selector", {"field_key": "score", "topk": 1}, "t")
    with pytest.raises(ValueError, match="cannot be ordered"):
        op.process(pa.table({"score": [1.0, None, 3.0]}))


def test_stats_to_number_reads_strings_lists_and_sorts_the_rest_last():
    assert stats_to_number("1e2") == 100.0
    assert stats_to_number([1, 2, 6]) == 3.0
    assert stats_to_number(True) == 1.0
    for unreadable in (None, [], "abc", {"a": 1}):
        assert stats_to_number(unreadable) < -1e18
        assert stats_to_number(unreadable, reverse=False) > 1e18


SELECTOR_PARAMS = {
    "random_selector": {"select_ratio": None, "select_num": None, "seed": 42},
    "topk_specified_field_selector": {"field_key": "", "top_ratio": None, "topk": None, "reverse": True},
    "frequency_specified_field_selector": {"field_key": "", "top_ratio": None, "topk": None, "reverse": True},
    "range_specified_field_selector": {
        "field_key": "", "lower_percentile": None, "upper_percentile": None, "lower_rank": None, "upper_rank": None,
    },
    "tags_specified_field_selector": {"field_key": "", "target_tags": None},
}  # fmt: skip
BASE = {"text_key", "batch_size", "num_proc", "skip_op_error", "accelerator", "cpu_required", "mem_required"}


@pytest.mark.parametrize("name", sorted(SELECTOR_PARAMS))
def test_selector_has_datajuicers_parameters_and_defaults(name):
    cls = registered_ops()[name]
    assert {k: f.default for k, f in cls.model_fields.items() if k not in BASE} == SELECTOR_PARAMS[name]


@pytest.mark.parametrize("name,args,message", [
    ("topk_specified_field_selector", {"field_key": "a", "top_k": 3}, "unknown parameter 'top_k' (did you mean 'topk'?)"),
    ("random_selector", {"select_number": 3}, "unknown parameter 'select_number' (did you mean 'select_num'?)"),
    ("random_selector", {"select_ratio": 1.5}, "select_ratio"),
    ("random_selector", {"select_ratio": 0}, "select_ratio 0 without select_num"),
    ("topk_specified_field_selector", {"topk": 0}, "topk"),
    ("range_specified_field_selector", {"lower_percentile": -0.1}, "lower_percentile"),
    ("frequency_specified_field_selector", {"top_ratio": 2}, "top_ratio"),
    ("tags_specified_field_selector", {"field_key": "a"}, "target_tags is required"),
    ("tags_specified_field_selector", {"field_key": "a", "target_tags": "en"}, "target_tags"),
])  # fmt: skip
def test_bad_selector_params_fail_naming_the_key(name, args, message):
    with pytest.raises(RecipeError) as err:
        build_op(name, args, "process[1]")
    assert f"process[1].{name}" in str(err.value) and message in str(err.value)


# --- ray_bts_minhash_deduplicator -------------------------------------------------------

RAY_KNOBS = {"union_find_parallel_num": 4, "union_threshold": 128, "max_pending_edge_buffer_task": 5,
             "num_edge_buffer_task_returns": 2, "max_pending_filter_tasks": 5, "num_filter_task_returns": 2,
             "merge_batch_size": 10, "minhash_batch_size": 64, "memory_per_sample": 0.5,
             "actor_memory": 2_000_000_000, "task_memory": 1_000_000_000}


@pytest.mark.parametrize("path", sorted(VECTORS.glob("document_minhash_deduplicator*.jsonl")), ids=lambda p: p.stem)
@pytest.mark.parametrize("seed", [1, 2])
def test_ray_bts_minhash_decides_like_document_minhash(path, seed):
    lines = load(path)
    args = lines[0]["args"]
    local = build_op("document_minhash_deduplicator", args, "t")
    ray = build_op("ray_bts_minhash_deduplicator", {**args, **RAY_KNOBS}, "t")
    table = pa.table({"text": [l["input"] for l in lines]})
    slices = partitions(len(lines), seed)
    drops = ray.drops([through_parquet(ray.row_keys(table.slice(lo, hi - lo))) for lo, hi in slices])
    assert drops == local.drops([local.row_keys(table.slice(lo, hi - lo)) for lo, hi in slices])
    kept = [lo + i for (lo, hi), d in zip(slices, drops) for i in range(hi - lo) if i not in set(d)]
    assert kept == [i for i, l in enumerate(lines) if l["output"] is not None]  # DataJuicer's survivors
    assert 0 < len(kept) < len(lines)


def test_ray_bts_knobs_are_accepted_and_do_not_change_the_checkpoint_key():
    plain = build_op("ray_bts_minhash_deduplicator", {"window_size": 3}, "t")
    tuned = build_op("ray_bts_minhash_deduplicator", {"window_size": 3, **RAY_KNOBS}, "t")
    assert plain.params() == tuned.params()
    assert build_op("ray_bts_minhash_deduplicator", {"union_find_parallel_num": "auto"}, "t")
    with pytest.raises(RecipeError, match="unknown parameter 'union_find_parallel'"):
        build_op("ray_bts_minhash_deduplicator", {"union_find_parallel": 2}, "t")


def test_check_recipe_reports_the_selectors_and_ray_bts_as_native(tmp_path):
    from djworker.compat import check_recipe

    import yaml

    process = [{c["op"]: c["args"]} for c in CASES["cases"][::3]] + [
        {"ray_bts_minhash_deduplicator": {"tokenization": "character", "union_find_parallel_num": 2,
                                          "accelerator": "cuda", "memory_per_sample": 0.1}}]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"dataset_path": str(tmp_path / "in.jsonl"), "process": process}))
    report = check_recipe(str(path))
    assert {i.name for i in report.of("op")} == {next(iter(p)) for p in process} and len(report.of("op")) == len(process)
    assert all(i.status == "native" for i in report.of("op")), report.of("op")
    assert report.runnable
