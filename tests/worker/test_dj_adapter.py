"""The optional DataJuicer adapter: unknown names resolve to DataJuicer's ops when installed."""
from __future__ import annotations

import pyarrow as pa
import pytest

from djworker.errors import RecipeError
from djworker.ops import build_op
from djworker.ops.dj_adapter import datajuicer_registry


def test_without_the_extra_an_unknown_op_is_a_clear_recipe_error():
    if datajuicer_registry() is not None:
        pytest.skip("py-data-juicer is installed")
    with pytest.raises(RecipeError, match="unknown op 'chinese_words_mapper'"):
        build_op("chinese_words_mapper", {}, "process[0]")


@pytest.mark.skipif(datajuicer_registry() is None, reason="py-data-juicer (optional extra) is not installed")
def test_datajuicer_mapper_and_filter_run_on_our_tables():
    """Ops DataJuicer has and we do not implement natively, run on Arrow tables."""
    from data_juicer.ops import OPERATORS

    table = pa.table({"text": ["abc 中文 123!", "纯中文"], "score": [0.9, 0.1]})
    mapper = build_op("remove_non_chinese_character_mapper", {"keep_alphabet": False}, "process[0]")
    reference = OPERATORS.modules["remove_non_chinese_character_mapper"](keep_alphabet=False)
    expected = reference.process_batched({"text": ["abc 中文 123!", "纯中文"], "score": [0.9, 0.1]})["text"]
    assert mapper.process(table).column("text").to_pylist() == expected
    keep = build_op("specified_numeric_field_filter", {"field_key": "score", "min_value": 0.5}, "process[1]")
    assert keep.process(table).column("score").to_pylist() == [0.9]


@pytest.mark.skipif(datajuicer_registry() is None, reason="py-data-juicer (optional extra) is not installed")
def test_datajuicer_auto_install_is_disabled():
    from data_juicer.utils.lazy_loader import LazyLoader

    with pytest.raises(RuntimeError, match="auto-install is disabled"):
        LazyLoader._install_package("some-package")


# An op DataJuicer has and this engine does not implement natively, and that needs no model.
ADAPTED_OP = "pii_redaction_mapper"


@pytest.mark.skipif(datajuicer_registry() is None, reason="py-data-juicer (optional extra) is not installed")
def test_adapted_op_runs_partitioned_checkpointed_and_resumes_after_a_kill(tmp_path):
    import signal

    from djworker.ops import registered_ops
    from tests.support.engine import dj_process, event_types, events, expected_rows, make_recipe, output_rows

    assert ADAPTED_OP not in registered_ops(), "pick another op: this one became native"
    recipe = make_recipe(tmp_path, rows=500, partition={"size": 100}, checkpoint={"strategy": "every_op"},
                         process=[{ADAPTED_OP: {}}, {"text_length_filter": {"min_len": 50}}])
    killed = dj_process(recipe, "a", env={"DJ_FAILPOINTS": "op_done=5"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "out" / "result.jsonl").exists()
    done = dj_process(recipe, "a")
    assert done.returncode == 0, done.stderr
    evs = events(tmp_path, "a")
    types = event_types(evs)
    assert "JOB_RESUMED" in types and types[-1] == "JOB_COMPLETE"
    saved = {(e["partition_id"], e["op_idx"]) for e in evs if e["event_type"] == "CHECKPOINT_SAVE"}
    assert {p for p, _ in saved} == set(range(5)) and {o for _, o in saved} >= {0}
    assert output_rows(tmp_path / "out" / "result.jsonl") == expected_rows(recipe)


@pytest.mark.skipif(datajuicer_registry() is None, reason="py-data-juicer (optional extra) is not installed")
def test_model_op_fails_before_any_work_naming_the_model(tmp_path):
    from tests.support.engine import dj_process, make_recipe

    recipe = make_recipe(tmp_path, rows=50, process=[{"language_id_score_filter": {"lang": "en"}}])
    done = dj_process(recipe, "m")
    assert done.returncode == 2 and "lid.176.bin" in done.stderr
    assert not (tmp_path / "jobs" / "m").exists() and not (tmp_path / "out").exists()
