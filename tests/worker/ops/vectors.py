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
SINGLE_SAMPLE_FILTERS = {
    "stopwords_filter", "suffix_filter", "specified_field_filter", "specified_numeric_field_filter",
    "general_field_filter",
}  # fmt: skip


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
    if "output_fields" in lines[0]:
        return sample_mapper_mismatches(op, lines)
    if isinstance(lines[0]["output"], list) or any("error" in l for l in lines):
        return chunk_mismatches(op, lines)
    table = pa.table({"text": [l["input"] for l in lines], "row": range(len(lines))})
    out = op.process(table)
    assert out.column("row").to_pylist() == list(range(len(lines))), "a mapper must pass other columns through"
    got = out.column("text").to_pylist()
    return [
        f"line {i}: {l['input']!r}\n  expected {l['output']!r}\n  got      {g!r}"
        for i, (l, g) in enumerate(zip(lines, got))
        if g != l["output"]
    ]


def sample_mapper_mismatches(op: Mapper, lines: list[dict[str, Any]]) -> list[str]:
    """Mappers that see whole samples: the file as one table with each line's fields; the
    output sample (text and every other field) is compared per line."""
    rows = [{"text": l["input"], **l["fields"]} for l in lines]
    out = op.process(pa.Table.from_pylist(rows)).to_pylist()
    if len(out) != len(lines):
        return [f"{len(lines)} samples in, {len(out)} out"]
    bad = []
    for i, (l, got) in enumerate(zip(lines, out)):
        expected = {"text": l["output"], **l["output_fields"]}
        if got != expected:
            bad.append(f"line {i}: {l['input']!r}\n  expected {expected!r}\n  got      {got!r}")
    return bad


def chunk_mismatches(op: Mapper, lines: list[dict[str, Any]]) -> list[str]:
    """Mappers whose output per sample is a list of rows (text_chunk_mapper): the file as one
    table; rows are grouped back by a row marker. A line with `error` must raise alone."""
    ok = [(i, l) for i, l in enumerate(lines) if "error" not in l]
    table = pa.table({"text": [l["input"] for _, l in ok], "row": [i for i, _ in ok]})
    out = op.process(table)
    got: dict[int, list[str]] = {}
    for row, text in zip(out.column("row").to_pylist(), out.column("text").to_pylist()):
        got.setdefault(row, []).append(text)
    bad = [f"line {i}: {l['input']!r}\n  expected {l['output']!r}\n  got      {got.get(i, [])!r}"
           for i, l in ok if got.get(i, []) != l["output"]]
    if out.column("row").to_pylist() != sorted(out.column("row").to_pylist()):
        bad.append("chunks are not in sample order")
    return bad


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
