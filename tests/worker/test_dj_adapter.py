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
