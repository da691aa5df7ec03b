"""DataJuicer's published text recipes (tests/data/dj-recipes, copied unchanged; see NOTICE).

Every recipe gets `dj-process --check-recipe`; the ones in RUNNABLE also run end to end with only
dataset_path, export_path and np overridden, as a new user would run them. Each other recipe is
PENDING with exactly the ops that keep it from running today, so the test fails both when a
recipe stops running and when a pending op lands (then move the recipe to RUNNABLE)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from djworker.compat import MEDIA, check_recipe, datajuicer_ops
from djworker.config import load_recipe
from djworker.demo_data import rows
from djworker.errors import RecipeError
from djworker.ops.catalog import MODEL_OPS
from djworker.ops.dj_adapter import datajuicer_registry
from tests.support.engine import REPO, env_with

RECIPES = REPO / "tests" / "data" / "dj-recipes"
DJ_PROCESS = Path(sys.executable).with_name("dj-process")

RUNNABLE = [
    "data_juicer_recipes/github_code/redpajama-stack-code-deduplicate.yaml",
    "reproduced_redpajama/redpajama-arxiv.yaml",
    "reproduced_redpajama/redpajama-books.yaml",
]

# Recipe -> the ops that block it with no models provided. Models: language_id_score_filter,
# perplexity_filter and `tokenization: true` (flagged_words / stopwords / words_num /
# word_repetition / alphanumeric filters) need their model files (docs/models.md); the
# others are global stages not written yet, or media ops.
LID, PPL, FW, WR, WN = ("language_id_score_filter", "perplexity_filter", "flagged_words_filter",
                        "word_repetition_filter", "words_num_filter")
PILE = [FW, LID, PPL, WR, WN]
PENDING = {
    "data_juicer_recipes/alpaca_cot/alpaca-cot-en-refine.yaml": [FW],
    "data_juicer_recipes/alpaca_cot/alpaca-cot-zh-refine.yaml": [FW],
    "data_juicer_recipes/general-video-refine-example.yaml": [
        LID, PPL, "video_aesthetics_filter", "video_frames_text_similarity_filter", "video_motion_score_filter",
        "video_nsfw_filter", "video_watermark_filter"],
    "data_juicer_recipes/github_code/redpajama-code-refine.yaml": ["alphanumeric_filter"],
    "data_juicer_recipes/github_code/stack-code-refine.yaml": ["alphanumeric_filter"],
    "data_juicer_recipes/img-diff-recipe.yaml": [
        "imgdiff_difference_area_generator_mapper", "imgdiff_difference_caption_generator_mapper",
        "sdxl_prompt2prompt_mapper", "sentence_augmentation_mapper"],
    "data_juicer_recipes/llava-pretrain-refine.yaml": [
        "image_aspect_ratio_filter", "image_shape_filter", "image_size_filter", "image_text_matching_filter",
        "image_text_similarity_filter", PPL],
    "data_juicer_recipes/pile-europarl-refine.yaml": PILE,
    "data_juicer_recipes/pile-freelaw-refine.yaml": PILE + ["stopwords_filter"],
    "data_juicer_recipes/pile-hackernews-refine.yaml": PILE,
    "data_juicer_recipes/pile-nih-refine.yaml": PILE,
    "data_juicer_recipes/pile-philpaper-refine.yaml": PILE,
    "data_juicer_recipes/pile-pubmed-abstract-refine.yaml": PILE,
    "data_juicer_recipes/pile-pubmed-central-refine.yaml": PILE,
    "data_juicer_recipes/pile-uspto-refine.yaml": PILE,
    "data_juicer_recipes/redpajama-arxiv-refine.yaml": [FW, PPL, WR, WN],
    "data_juicer_recipes/redpajama-book-refine.yaml": PILE,
    "data_juicer_recipes/redpajama-c4-refine.yaml": [LID, PPL, WR, WN],
    "data_juicer_recipes/redpajama-cc-2019-30-refine.yaml": PILE,
    "data_juicer_recipes/redpajama-cc-2020-05-refine.yaml": PILE,
    "data_juicer_recipes/redpajama-cc-2021-04-refine.yaml": PILE,
    "data_juicer_recipes/redpajama-cc-2022-05-refine.yaml": PILE,
    "data_juicer_recipes/redpajama-cc-2023-06-refine.yaml": PILE,
    "data_juicer_recipes/redpajama-pile-stackexchange-refine.yaml": PILE,
    "data_juicer_recipes/redpajama-wiki-refine.yaml": PILE,
    "demo/analyzer.yaml": [LID, PPL],
    "demo/dedup-ray-bts-gpu.yaml": [LID],
    "demo/dedup-ray-bts.yaml": [LID],
    "demo/dedup.yaml": [LID],
    "demo/process-huggingface.yaml": [LID],
    "demo/process-s3.yaml": [LID],
    "demo/process.yaml": [LID],
    "reproduced_bloom/bloom-oscar.yaml": [LID, PPL],
    "reproduced_redpajama/redpajama-code.yaml": ["alphanumeric_filter"],
    "reproduced_redpajama/redpajama-stackexchange.yaml": [LID],
}

ALL = sorted(str(p.relative_to(RECIPES)) for p in RECIPES.rglob("*.yaml"))


def adapted_when_installed() -> set[str]:
    """Ops the adapter runs when py-data-juicer is installed (then they no longer block)."""
    from djworker.ops import registered_ops

    if datajuicer_registry() is None:
        return set()
    return {n for n, op in datajuicer_ops().items()
            if op["type"] in ("mapper", "filter") and n not in MODEL_OPS and n not in registered_ops()}


def test_every_copied_recipe_is_either_runnable_or_pending():
    assert len(ALL) == 38
    assert sorted(RUNNABLE + list(PENDING)) == ALL
    assert not set(RUNNABLE) & set(PENDING)


@pytest.mark.parametrize("name", ALL)
def test_check_recipe_reports_what_blocks_each_recipe(name, tmp_path):
    report = check_recipe(str(RECIPES / name), overrides(tmp_path))
    blocking = sorted({i.name for i in report.items if i.blocks})
    expected = sorted(set(PENDING.get(name, [])) - adapted_when_installed())
    assert blocking == expected
    assert report.runnable == (not expected and not report.problems)
    assert report.runnable == (name in RUNNABLE or not expected)
    assert not [i for i in report.of("key") if i.status == "unknown"]


def overrides(tmp: Path, data: Path | None = None) -> dict:
    return {"dataset_path": str(data or tmp / "in.jsonl"), "export_path": str(tmp / "out" / "result.jsonl"), "np": 2}


def corpus(path: Path, n: int = 300) -> list[dict]:
    """Demo rows plus an exact copy of every tenth one (the recipes all deduplicate)."""
    data = list(rows(n, 7))
    data += [dict(r) for r in data[::10]]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in data))
    return data


LATEX = "reproduced_redpajama/redpajama-arxiv.yaml"  # keeps only LaTeX with a \\section, rewritten


def latex_corpus(path: Path, n: int = 40) -> list[dict]:
    """LaTeX documents (half of them without a section, which the recipe drops), plus a copy of every tenth."""
    # the macro is defined after the section: remove_header_mapper drops everything before it
    data = [{"text": ("\\documentclass{article}\n"
                      + (f"\\section{{Part {i}}}\n\\newcommand{{\\v}}{{value {i}}}\nThe \\v here % a comment\nline {i}.\n"
                         if i % 2 else f"No section {i}.\n"))}
            for i in range(n)]
    data += [dict(r) for r in data[::10]]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in data))
    return data


@pytest.mark.parametrize("name", RUNNABLE)
def test_runnable_recipe_runs_unchanged(name, tmp_path):
    data = (latex_corpus if name == LATEX else corpus)(tmp_path / "in.jsonl")
    cli = [str(DJ_PROCESS)] if DJ_PROCESS.exists() else [sys.executable, "-m", "djworker.cli.process"]
    flags = [f"--{k}={v}" for k, v in overrides(tmp_path).items()]
    # cwd=tmp_path: the recipes' default work dir (./outputs/...) lands in the test's directory.
    done = subprocess.run([*cli, "--config", str(RECIPES / name), "--quiet", *flags], cwd=tmp_path, env=env_with(),
                          capture_output=True, text=True, timeout=300, start_new_session=True)
    assert done.returncode == 0, done.stderr
    out = [json.loads(line) for line in (tmp_path / "out" / "result.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in out]
    assert len(texts) == len(set(texts)), "the recipe's deduplicator left exact duplicates"
    assert 0 < len(out) <= len({r["text"] for r in data})
    if name == LATEX:  # sections kept, headers and comments gone, the macro expanded
        assert all(r["text"].startswith("\\section") and "%" not in r["text"] and "\\v" not in r["text"] for r in out)
    else:
        assert {r["text"] for r in out} <= {r["text"] for r in data}
    if yaml.safe_load((RECIPES / name).read_text()).get("open_tracer"):  # the copies: duplicate pairs, trace_num 10
        pairs = [json.loads(line) for p in tmp_path.rglob("trace/duplicate-*.jsonl") for line in p.read_text().splitlines()]
        assert 0 < len(pairs) <= 10 and all(set(p) == {"dup1", "dup2"} and p["dup2"]["text"] for p in pairs)


# Recipes that only the model files hold back (docs/models.md): with tiny models provided, they run.
NEEDS_MODELS = {LID, PPL, FW, WR, WN, "alphanumeric_filter", "stopwords_filter"}
WITH_MODELS = [n for n, blockers in PENDING.items() if set(blockers) <= NEEDS_MODELS]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    """fastText, SentencePiece (en, and zh for the Chinese recipe), KenLM and a tokenizer, built
    here in a child process (fastText cannot train twice in one process)."""
    folder = tmp_path_factory.mktemp("models")
    code = ("import sys; from pathlib import Path; from tests.support.tiny_models import build_all, build_sentencepiece; "
            "build_sentencepiece(build_all(Path(sys.argv[1])), 'zh')")
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True, env=env_with(), timeout=300)
    return folder


@pytest.mark.parametrize("name", WITH_MODELS)
def test_text_recipe_runs_unchanged_with_tiny_models_provided(name, tmp_path, tiny_models):
    """The recipe file as published, only dataset, export and np overridden; the models found
    where DataJuicer looks (DATA_JUICER_MODELS_CACHE)."""
    key = yaml.safe_load((RECIPES / name).read_text()).get("text_keys") or "text"
    key = key[0] if isinstance(key, list) else key
    data = [{key: r["text"]} for r in corpus(tmp_path / "demo.jsonl")]
    (tmp_path / "in.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in data))
    cli = [str(DJ_PROCESS)] if DJ_PROCESS.exists() else [sys.executable, "-m", "djworker.cli.process"]
    flags = [f"--{k}={v}" for k, v in overrides(tmp_path).items()]
    done = subprocess.run([*cli, "--config", str(RECIPES / name), "--quiet", *flags], cwd=tmp_path,
                          env=env_with({"DATA_JUICER_MODELS_CACHE": str(tiny_models)}), capture_output=True, text=True,
                          timeout=300, start_new_session=True)
    assert done.returncode == 0, done.stderr[-3000:]
    out = [orjson.loads(line) for line in (tmp_path / "out" / "result.jsonl").read_bytes().splitlines()]
    assert len(out) <= len(data) and all(key in r for r in out)


@pytest.mark.parametrize("name", [n for n in ALL if any(
    datajuicer_ops().get(op, {}).get("modality") in MEDIA for op in PENDING.get(n, []))])
def test_media_recipes_fail_before_any_work_naming_their_ops(name, tmp_path, monkeypatch):
    # as without the DataJuicer extra (with it, media ops go to the adapter)
    monkeypatch.setattr("djworker.ops.dj_adapter.datajuicer_registry", lambda: None)
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(RecipeError) as err:
        load_recipe(RECIPES / name, overrides(tmp_path))
    media = [op for op in PENDING[name] if datajuicer_ops()[op]["modality"] in MEDIA]
    assert all(op in str(err.value) for op in media)
    assert not (tmp_path / "out").exists() and not (tmp_path / "outputs").exists()
