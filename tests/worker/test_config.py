"""Recipe validation: every problem is a RecipeError that names the key, before any work."""
from __future__ import annotations

import pytest

from djworker.config import load_recipe, parse_overrides
from djworker.errors import RecipeError

BASE = {"dataset_path": "x.jsonl", "process": [{"text_length_filter": {"min_len": 5}}]}


def recipe(**extra):
    return load_recipe(None, raw={**BASE, **extra})


def test_nested_sections_win_over_legacy_flat_keys():
    r = recipe(partition={"size": 50}, partition_size=900, max_retries=7, retry={"max_retries": 1},
               storage_format="jsonl", intermediate_storage={"format": "arrow"})
    assert (r.partition_rows, r.retries, r.intermediate_format) == (50, 1, "arrow")


def test_legacy_flat_keys_are_the_fallback():
    r = recipe(partition_size=900, max_partition_size_mb=8, max_retries=7, retry_backoff="linear",
               storage_format="jsonl", preserve_intermediate_data=True)
    assert (r.partition_rows, r.partition_max_mb, r.retries, r.backoff) == (900, 8, 7, "linear")
    assert r.intermediate_format == "jsonl" and r.preserve_intermediate


def test_partition_section_retries_sit_between_retry_section_and_flat_keys():
    assert recipe(partition={"max_retries": 4}, max_retries=9).retries == 4


@pytest.mark.parametrize("extra, expected", [
    ({"chekpoint": {}}, "unknown key 'chekpoint' (did you mean 'checkpoint'?)"),
    ({"checkpoint": {"strategy": "every_ops"}}, "checkpoint.strategy"),
    ({"checkpoint": {"strategy": "manual"}}, "checkpoint.op_names"),
    ({"checkpoint": {"n_ops": "three"}}, "checkpoint.n_ops"),
    ({"partition": {"sise": 3}}, "did you mean 'partition.size'?"),
    ({"retry": {"retry_backoff": "random"}}, "retry.retry_backoff"),
    ({"intermediate_storage": {"compression": "lz77"}}, "intermediate_storage.compression"),
    ({"process": []}, "no ops"),
    ({"process": [{"text_length_filter": {"min_length": 3}}]}, "unknown parameter 'min_length' (did you mean 'min_len'?)"),
    ({"process": [{"text_lenght_filter": {}}]}, "did you mean 'text_length_filter'?"),
    ({"process": [{"perplexity_filter": {"lang": "xx"}}]}, "KenLM language model 'xx.arpa.bin' not found"),
    ({"process": [{"text_length_filter": {"min_len": "abc"}}]}, "process[0].text_length_filter: min_len"),
    ({"checkpoint": {"strategy": "manual", "op_names": ["nope"]}}, "'nope'"),
    ({"executor_type": "spark"}, "executor_type"),
])
def test_bad_recipe_is_a_clear_error_naming_the_key(extra, expected):
    with pytest.raises(RecipeError) as err:
        recipe(**extra)
    assert expected in str(err.value)


def test_missing_dataset_path_is_named():
    with pytest.raises(RecipeError, match="missing required key 'dataset_path'"):
        load_recipe(None, raw={"process": BASE["process"]})


def test_dotted_overrides_are_validated_like_the_file():
    o = parse_overrides(["--checkpoint.strategy", "every_n_ops", "--checkpoint.n_ops", "3",
                         "--checkpoint.op_names", "a,b", "--partition.size=7"])
    assert o == {"checkpoint": {"strategy": "every_n_ops", "n_ops": 3, "op_names": ["a", "b"]}, "partition": {"size": 7}}
    r = load_recipe(None, o, raw=BASE)
    assert r.checkpoint.strategy.value == "every_n_ops" and r.checkpoint.n_ops == 3 and r.partition_rows == 7
    with pytest.raises(RecipeError, match="checkpoint.n_ops"):
        load_recipe(None, parse_overrides(["--checkpoint.n_ops", "0"]), raw=BASE)


def test_missing_recipe_file_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("process: [\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
