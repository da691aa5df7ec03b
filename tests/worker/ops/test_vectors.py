"""Every line of every DataJuicer 1.6.1 vector file, replayed through our ops."""

from __future__ import annotations

import builtins

import pyarrow as pa
import pytest

from djworker.errors import RecipeError
from djworker.ops.base import Deduplicator, Filter, Mapper
from djworker.ops.catalog import build_op
from tests.worker.ops.vectors import (
    SINGLE_SAMPLE_FILTERS,
    VECTOR_FILES,
    VECTORS,
    build,
    dedup_mismatches,
    filter_mismatches,
    load,
    mapper_mismatches,
    sample_table,
)


@pytest.fixture(autouse=True)
def in_vectors_dir(monkeypatch):
    """Word-list args say "assets", relative to the vectors folder; we resolve them against the CWD."""
    monkeypatch.chdir(VECTORS)


def test_every_vector_file_is_replayed():
    assert len(VECTOR_FILES) >= 73 + 45
    assert sum(len(load(p)) for p in VECTOR_FILES) >= 25982 + 45 * 17


@pytest.mark.parametrize("path", VECTOR_FILES, ids=lambda p: p.stem)
def test_vector_file(path):
    lines = load(path)
    op = build(lines, path.name)
    if isinstance(op, Mapper):
        bad = mapper_mismatches(op, lines)
    elif isinstance(op, Deduplicator):
        bad = dedup_mismatches(op, lines)
    else:
        assert isinstance(op, Filter)
        bad = filter_mismatches(op, lines, single_sample=op.op_name in SINGLE_SAMPLE_FILTERS)
    assert not bad, f"{len(bad)} mismatches in {path.name}:\n" + "\n".join(bad[:20])


ERROR_LINES = [(p, i, l) for p in VECTOR_FILES for i, l in enumerate(load(p)) if "error" in l]


@pytest.mark.parametrize("path,index,line", ERROR_LINES, ids=[f"{p.stem}:{i}" for p, i, _ in ERROR_LINES])
def test_sample_that_raises_in_datajuicer_raises_here(path, index, line):
    """DJ recorded an exception for this sample; the engine must see a failure, not a silent drop."""
    op = build_op(line["op"], line["args"], path.name)
    # DJ's field assertion (AssertionError) is a KeyError naming the field here; others match.
    raised = line["error"].split(":", 1)[0]
    expected = KeyError if raised == "AssertionError" else getattr(builtins, raised)
    if line["op"] == "text_chunk_mapper":
        table = pa.table({"text": [line["input"]]})
    else:
        table = sample_table(line, index)
    with pytest.raises(expected):
        op.process(table)


def first_lines() -> list:
    return [load(p)[0] for p in VECTOR_FILES if not p.stem.endswith("__subset")]


TEXT_READERS = [
    l
    for l in first_lines()
    if l["op"] not in {
        "suffix_filter", "specified_field_filter", "clean_html_mapper", "specified_numeric_field_filter",
        "general_field_filter", "python_lambda_mapper", "python_file_mapper",
    }
    and not (l["op"] == "replace_content_mapper" and not l["args"].get("pattern"))
]  # fmt: skip


@pytest.mark.parametrize("line", TEXT_READERS, ids=lambda l: f"{l['op']}{sorted(l['args'].items())}")
def test_null_text_raises_like_datajuicer(line):
    """DJ's str methods and regexes raise TypeError/AttributeError on None text."""
    try:
        op = build_op(line["op"], line["args"], "vectors")
    except RecipeError:
        pytest.skip("op refuses these args up front")
    table = pa.table({"text": pa.array(["Some text. Some text.", None], pa.string())})
    with pytest.raises(TypeError, match="null text"):
        op.hashes(table) if isinstance(op, Deduplicator) else op.process(table)


def test_clean_html_passes_null_text_through():
    """DJ's clean_html_mapper returns a non-string sample unchanged instead of raising."""
    op = build_op("clean_html_mapper", {}, "t")
    out = op.process(pa.table({"text": pa.array(["<b>x</b>", None], pa.string())}))
    assert out.column("text").to_pylist() == ["x", None]
