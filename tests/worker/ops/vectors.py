"""Loading and replaying the DataJuicer 1.6.1 op vectors in tests/data/dj-op-vectors/."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa

from djworker.ops.base import STATS_COLUMN, Deduplicator, Mapper, Op, merge_stats
from djworker.ops.catalog import build_op

VECTORS = Path(__file__).resolve().parents[2] / "data" / "dj-op-vectors"
VECTOR_FILES = sorted(VECTORS.glob("*.jsonl"))
SINGLE_SAMPLE_FILTERS = {"stopwords_filter", "suffix_filter", "specified_field_filter"}


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").split("\n") if line]  # not splitlines: U+2028 is data


def build(lines: list[dict[str, Any]], where: str) -> Op:
    """The op of a vector file; word-list dirs in the args are relative to VECTORS (the CWD in tests)."""
    return build_op(lines[0]["op"], lines[0]["args"], where)


def same(expected: Any, got: Any) -> bool:
    if isinstance(expected, float) or isinstance(got, float):
        return isinstance(got, (int, float)) and math.isclose(expected, got, rel_tol=1e-9, abs_tol=1e-12)
    return expected == got


def sample_table(line: dict[str, Any], row: int) -> pa.Table:
    """One sample as DJ's executor sees it: text, its extra fields and a row marker."""
    columns = {"text": [line["input"]], "row": [row]}
    for key, value in line.get("fields", {}).items():
        columns[key] = pa.array([value])
    return pa.table(columns)


def mapper_mismatches(op: Mapper, lines: list[dict[str, Any]]) -> list[str]:
    table = pa.table({"text": [l["input"] for l in lines], "row": range(len(lines))})
    out = op.process(table)
    assert out.column("row").to_pylist() == list(range(len(lines))), "a mapper must pass other columns through"
    got = out.column("text").to_pylist()
    return [
        f"line {i}: {l['input']!r}\n  expected {l['output']!r}\n  got      {g!r}"
        for i, (l, g) in enumerate(zip(lines, got))
        if g != l["output"]
    ]


def filter_mismatches(op: Op, lines: list[dict[str, Any]], single_sample: bool) -> list[str]:
    """Kept rows and stats per line. Batched filters see the whole file as one table;
    single-sample filters one table per line, each with that line's own field types."""
    if single_sample:
        kept, stats = {}, {}
        for i, l in enumerate(lines):
            if "error" in l:
                continue
            table = sample_table(l, i)
            kept[i] = op.process(table).num_rows == 1
            computed = op.compute_stats(table)  # suffix_filter has none
            stats[i] = merge_stats(table, computed).column(STATS_COLUMN).to_pylist()[0] if computed else {}
    else:
        table = pa.table({"text": [l["input"] for l in lines], "row": range(len(lines))})
        out = op.process(table)
        rows = set(out.column("row").to_pylist())
        kept = {i: i in rows for i in range(len(lines))}
        stats = dict(enumerate(merge_stats(table, op.compute_stats(table)).column(STATS_COLUMN).to_pylist()))
    bad = []
    for i, l in enumerate(lines):
        if "error" in l:
            continue
        if kept[i] != (l["output"] is not None):
            bad.append(
                f"line {i}: {l['input']!r}: expected kept={l['output'] is not None}, stats {l['stats']}, got {stats[i]}"
            )
        for key, value in l["stats"].items():
            if key not in (stats[i] or {}) or not same(value, stats[i][key]):
                bad.append(
                    f"line {i}: {l['input']!r}: stat {key} expected {value!r}, got {(stats[i] or {}).get(key)!r}"
                )
    return bad


def hash_text(value: Any) -> Any:
    """Our hash column value written as the vectors write it."""
    if isinstance(value, list):
        return [band.hex() for band in value]
    if isinstance(value, int):
        return str(value)
    return value


def dedup_mismatches(op: Deduplicator, lines: list[dict[str, Any]]) -> list[str]:
    table = pa.table({"text": [l["input"] for l in lines], "row": range(len(lines))})
    hashes = op.hashes(table).to_pylist()
    kept = set(op.process(table).column("row").to_pylist())
    bad = []
    for i, l in enumerate(lines):
        if (i in kept) != (l["output"] is not None):
            cluster = l["stats"]["dup_cluster_first_line"]
            bad.append(f"line {i}: {l['input']!r}: expected kept={l['output'] is not None} (cluster of line {cluster})")
        if hash_text(hashes[i]) != l["stats"][op.hash_column]:
            expected = l["stats"][op.hash_column]
            bad.append(f"line {i}: {l['input']!r}: {op.hash_column} expected {expected}, got {hash_text(hashes[i])}")
    return bad
