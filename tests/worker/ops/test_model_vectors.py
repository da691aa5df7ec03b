"""Our model-based ops against DataJuicer 1.6.1 run with the same tiny models on the same
corpus (tests/data/dj-model-vectors, made by tests/support/make_dj_model_vectors.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from djworker import models
from djworker.ops.catalog import build_op
from tests.support.make_dj_model_vectors import ASSETS, CASES, WORD_DIR_ARG, digests
from tests.worker.ops.test_model_ops import model_dir  # noqa: F401  (the session's tiny models)
from tests.worker.ops.vectors import filter_mismatches, load, sample_table

VECTORS = Path(__file__).resolve().parents[2] / "data" / "dj-model-vectors"


def test_the_models_are_the_ones_datajuicer_was_run_with(model_dir):  # noqa: F811
    assert digests(model_dir) == json.loads((VECTORS / "models.json").read_text())


@pytest.mark.parametrize("stem,name,args", CASES, ids=[c[0] for c in CASES])
def test_model_op_matches_datajuicer(model_dir, stem, name, args):  # noqa: F811
    lines = load(VECTORS / f"{stem}.jsonl")
    assert len(lines) == len(json.loads((VECTORS / "corpus.json").read_text()))
    args = dict(args)
    if name in WORD_DIR_ARG:
        args[WORD_DIR_ARG[name]] = str(ASSETS)
    with models.search_context(str(model_dir)):
        op = build_op(name, args, stem)
    bad = filter_mismatches(op, lines, single_sample=False)
    assert not bad, f"{len(bad)} mismatches in {stem}:\n" + "\n".join(bad[:20])
    for i, line in enumerate(lines):
        if "error" in line:  # DataJuicer failed on this sample: so must we
            with pytest.raises(Exception):
                op.process(sample_table(line, i))
