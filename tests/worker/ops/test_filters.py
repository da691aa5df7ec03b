"""Filter mechanics shared by every stats filter: stats land in __dj__stats__ under
DJ's keys, a present stat is trusted, other columns pass through."""

from __future__ import annotations

import pyarrow as pa

from djworker.ops.base import STATS_COLUMN
from djworker.ops.catalog import build_op


def test_filters_stack_their_stats_in_one_struct_and_keep_other_columns():
    table = pa.table(
        {"text": ["Hello world, this is fine.", "short", "x" * 40], "id": [1, 2, 3], "meta": [{"a": 1}] * 3}
    )
    table = build_op("text_length_filter", {}, "p[0]").process(table)
    table = build_op("special_characters_filter", {}, "p[1]").process(table)
    assert table.column("id").to_pylist() == [1, 3]
    assert table.column("meta").to_pylist() == [{"a": 1}] * 2
    assert table.column(STATS_COLUMN).to_pylist() == [
        {"text_len": 26, "special_char_ratio": 6 / 26},
        {"text_len": 40, "special_char_ratio": 0.0},
    ]


def test_a_stat_already_present_is_trusted_not_recomputed():
    stale = pa.StructArray.from_arrays([pa.array([100, 0], pa.int64())], names=["text_len"])
    table = pa.table({"text": ["tiny", "long enough text here"], STATS_COLUMN: stale})
    out = build_op("text_length_filter", {}, "p[0]").process(table)
    assert out.column("text").to_pylist() == ["tiny"]
    assert out.column(STATS_COLUMN).to_pylist() == [{"text_len": 100}]


def test_reversed_range_keeps_the_bounds_in_both_modes():
    texts = ["x" * n for n in (9, 10, 11, 49, 50, 51)]
    keep = build_op("text_length_filter", {"min_len": 10, "max_len": 50}, "p").process(pa.table({"text": texts}))
    flip = build_op("text_length_filter", {"min_len": 10, "max_len": 50, "reversed_range": True}, "p").process(
        pa.table({"text": texts})
    )
    assert [len(t) for t in keep.column("text").to_pylist()] == [10, 11, 49, 50]
    assert [len(t) for t in flip.column("text").to_pylist()] == [9, 10, 50, 51]


def test_specified_field_filter_walks_struct_columns():
    table = pa.table({"text": ["a", "b", "c"], "meta": [{"lang": "en"}, {"lang": "fr"}, {"lang": "zh"}]})
    op = build_op("specified_field_filter", {"field_key": "meta.lang", "target_value": ["en", "zh"]}, "p")
    out = op.process(table)
    assert out.column("text").to_pylist() == ["a", "c"]
    assert out.column(STATS_COLUMN).to_pylist() == [{"meta.lang": "en"}, {"meta.lang": "zh"}]


def test_suffix_filter_needs_the_suffix_column():
    import pytest

    op = build_op("suffix_filter", {"suffixes": [".txt"]}, "p")
    with pytest.raises(KeyError, match="__dj__suffix__"):
        op.process(pa.table({"text": ["a"]}))
    assert build_op("suffix_filter", {}, "p").process(pa.table({"text": ["a"]})).num_rows == 1


def test_ratio_stats_equal_their_definitions_on_random_text():
    """The ASCII byte-translate short cuts agree with the per-character definitions."""
    import random

    from djworker.ops.text_utils import special_character_set

    rng = random.Random(3)
    alphabet = [chr(c) for c in range(0x80)] + list("éß中文١²½😀\xa0\u3000一シ")
    texts = [
        "".join(rng.choice(alphabet[:128] if rng.random() < 0.5 else alphabet) for _ in range(rng.randint(1, 60)))
        for _ in range(3000)
    ]
    alnum = build_op("alphanumeric_filter", {}, "p").compute_stats(pa.table({"text": texts}))["alnum_ratio"].to_pylist()
    special = (
        build_op("special_characters_filter", {}, "p")
        .compute_stats(pa.table({"text": texts}))["special_char_ratio"]
        .to_pylist()
    )
    assert alnum == [sum(c.isalnum() for c in t) / len(t) for t in texts]
    assert special == [sum(c in special_character_set() for c in t) / len(t) for t in texts]
