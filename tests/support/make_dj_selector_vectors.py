"""Regenerate tests/data/dj-selector-vectors/cases.json: DataJuicer 1.6.1's selectors and
ray_bts_minhash_deduplicator's sibling run over one corpus, recording the rows each keeps.

    PYTHONPATH=. python -m tests.support.make_dj_selector_vectors

Needs py-data-juicer==1.6.1 importable (the `datajuicer` extra). Each corpus row carries its
position as `id`, so the file records which input rows DataJuicer returned and in what order."""
from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "data" / "dj-selector-vectors" / "cases.json"

CASES = [
    ("random_selector", {"select_num": 7}),
    ("random_selector", {"select_ratio": 0.3}),
    ("random_selector", {"select_ratio": 0.5, "select_num": 9}),
    ("random_selector", {"select_ratio": 0.5, "select_num": 40}),
    ("random_selector", {"select_ratio": 0.01}),  # int(0.4) = 0: DataJuicer keeps every row
    ("random_selector", {"select_num": 40}),  # exactly the row count
    ("topk_specified_field_selector", {"field_key": "score", "topk": 5}),
    ("topk_specified_field_selector", {"field_key": "score", "top_ratio": 0.25, "reverse": False}),
    ("topk_specified_field_selector", {"field_key": "meta.n", "topk": 6}),
    ("topk_specified_field_selector", {"field_key": "meta.n", "topk": 6, "reverse": False}),
    ("topk_specified_field_selector", {"field_key": "meta.s", "top_ratio": 0.2, "topk": 30}),
    ("topk_specified_field_selector", {"field_key": "meta.key1.key2.count", "top_ratio": 0.1}),
    ("topk_specified_field_selector", {"field_key": "meta.vals", "topk": 10, "reverse": False}),
    ("topk_specified_field_selector", {"field_key": "score"}),
    ("range_specified_field_selector", {"field_key": "meta.n", "lower_percentile": 0.2, "upper_percentile": 0.7}),
    ("range_specified_field_selector", {"field_key": "meta.n", "lower_rank": 3, "upper_rank": 10}),
    ("range_specified_field_selector", {"field_key": "score", "lower_rank": 2, "upper_percentile": 0.5}),
    ("range_specified_field_selector", {"field_key": "score", "lower_percentile": 0.5, "lower_rank": 25,
                                        "upper_percentile": 0.9, "upper_rank": 33}),
    ("range_specified_field_selector", {"field_key": "meta.vals", "lower_percentile": 0.0, "upper_rank": 12}),
    ("range_specified_field_selector", {"field_key": "meta.s", "lower_rank": 5, "upper_rank": 2}),
    ("range_specified_field_selector", {"field_key": "score", "upper_rank": 3}),
    # the parameter sets of DataJuicer's own selector unit tests, on this corpus
    ("range_specified_field_selector", {"field_key": "meta.key1.key2.count", "lower_percentile": 0.3,
                                        "upper_percentile": 1.0, "lower_rank": 7, "upper_rank": 9}),
    ("range_specified_field_selector", {"field_key": "meta.key1.key2.count", "lower_percentile": 0.7,
                                        "upper_percentile": 1.0, "lower_rank": 3, "upper_rank": 9}),
    ("range_specified_field_selector", {"field_key": "meta.vals", "lower_percentile": 0.0,
                                        "upper_percentile": 0.5, "lower_rank": 2, "upper_rank": 4}),
    ("random_selector", {"select_ratio": 0.2, "select_num": 5}),
    ("random_selector", {"select_ratio": 0.5, "select_num": 4}),
    ("frequency_specified_field_selector", {"field_key": "meta.lang", "topk": 2}),
    ("frequency_specified_field_selector", {"field_key": "meta.lang", "top_ratio": 0.5, "reverse": False}),
    ("frequency_specified_field_selector", {"field_key": "score", "topk": 3}),
    ("frequency_specified_field_selector", {"field_key": "meta.key1.key2.count", "top_ratio": 0.3, "topk": 2}),
    ("frequency_specified_field_selector", {"field_key": "meta.lang"}),
    ("tags_specified_field_selector", {"field_key": "meta.lang", "target_tags": ["en", "zh"]}),
    ("tags_specified_field_selector", {"field_key": "meta.lang", "target_tags": ["EN", "fr"]}),
    ("tags_specified_field_selector", {"field_key": "meta.key1.key2.count", "target_tags": ["3"]}),
    ("tags_specified_field_selector", {"field_key": "text", "target_tags": ["row 3", "row 17", "absent"]}),
]


def corpus() -> list[dict]:
    rng = random.Random(16)
    langs = ["en", "en", "en", "zh", "zh", "fr", "de", None, "En"]
    rows = []
    for i in range(40):
        n = rng.choice([None, 1, 2, 2.5, 3, 3, 7, 10, 10, 11.25, -4])
        rows.append({
            "id": i,
            "text": f"row {i}",
            "score": rng.choice([1, 2, 3, 5, 5, 8, 13, 21]) + (0.5 if i % 11 == 0 else 0),
            "meta": {
                "lang": rng.choice(langs),
                "n": n,
                "s": rng.choice(["3.5", "1e2", "abc", "", "-2", "7"]),
                "vals": rng.choice([[], [1.0], [1.0, 3.0], [2.0, 2.0, 8.0], [0.5]]),
                "key1": {"key2": {"count": rng.choice([None, 3, 18, 89, 354.32])}},
            },
        })
    return rows


def main() -> None:
    from data_juicer.core.data import NestedDataset
    from data_juicer.ops.base_op import OPERATORS

    import data_juicer

    rows = corpus()
    cases = []
    for op_name, args in CASES:
        result = OPERATORS.modules[op_name](**args).process(NestedDataset.from_list(rows))
        cases.append({"op": op_name, "args": args, "dj_ids": [r["id"] for r in result.to_list()]})
    OUT.write_text(json.dumps({"datajuicer_version": data_juicer.__version__, "rows": rows, "cases": cases},
                              indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
