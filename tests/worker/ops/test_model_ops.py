"""Model-based ops with tiny real models trained in the test session: how models are found,
the missing-model error, one load per process, and dj-process end to end (also from S3)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from djworker import models
from djworker.config import load_recipe
from djworker.errors import RecipeError
from djworker.ops.catalog import build_op
from tests.support.engine import dj_process, env_with

EN = ["the quick brown fox jumps over a lazy dog", "people walk to school every morning"]
ZH = ["我们今天去学校读书", "天气很好人们每天早上走路"]
GIBBERISH = ["zzq xqj vvk kkq", "Qwxz Pfft Brrr"]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """Built in a child process: fastText cannot train twice in one process (NaN)."""
    folder = tmp_path_factory.mktemp("models")
    code = "import sys; from pathlib import Path; from tests.support.tiny_models import build_all; build_all(Path(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True, env=env_with(), timeout=300)
    return folder


@pytest.fixture
def no_dj_env(monkeypatch, tmp_path):
    """DataJuicer's variables pointed at empty places, so only what a test sets is found."""
    monkeypatch.setenv("DATA_JUICER_MODELS_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("DATA_JUICER_EXTERNAL_MODELS_HOME", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.chdir(tmp_path)


def recipe_file(tmp: Path, process: list, rows: list[str], **extra) -> Path:
    data = tmp / "input.jsonl"
    data.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(rows)))
    recipe = {"dataset_path": str(data), "export_path": str(tmp / "out" / "result.jsonl"),
              "work_dir": str(tmp / "jobs"), "np": 2, "partition": {"size": 2}, "export_stats": True,
              "process": process, **extra}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_missing_model_fails_before_work_naming_the_file_and_every_place(tmp_path, no_dj_env, monkeypatch):
    monkeypatch.setenv("DATA_JUICER_EXTERNAL_MODELS_HOME", f"{tmp_path / 'ext1'}:{tmp_path / 'ext2'}")
    path = recipe_file(tmp_path, [{"perplexity_filter": {"lang": "fr"}}], EN, models_dir=str(tmp_path / "mine"))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    message = str(err.value)
    assert message.startswith("process[0].perplexity_filter:")
    for name in ("fr.sp.model", "fr.arpa.bin"):
        for place in (tmp_path / "mine", tmp_path, tmp_path / "ext1", tmp_path / "ext2", tmp_path / "empty-cache"):
            assert str(place / name) in message
    assert "never downloads" in message
    # and dj-process refuses the recipe without creating a job
    result = dj_process(path, "missing-model", env={"DATA_JUICER_MODELS_CACHE": str(tmp_path / "empty-cache")})
    assert result.returncode == RecipeError.exit_code, result.stderr
    assert "fr.arpa.bin" in result.stderr
    assert not (tmp_path / "out").exists()


def test_hf_tokenizer_missing_names_the_hub_cache_too(no_dj_env, tmp_path):
    with pytest.raises(RecipeError, match="empty-hub/models--EleutherAI--pythia-6.9b-deduped"):
        build_op("alphanumeric_filter", {"tokenization": True}, "process[0]")


@pytest.mark.parametrize("where", ["models_cache", "external_home", "cwd", "models_dir"])
def test_model_is_found_where_datajuicer_looks(model_dir, no_dj_env, monkeypatch, tmp_path, where):
    models_dir = None
    if where == "models_cache":
        monkeypatch.setenv("DATA_JUICER_MODELS_CACHE", str(model_dir))
    elif where == "external_home":
        monkeypatch.setenv("DATA_JUICER_EXTERNAL_MODELS_HOME", f"{tmp_path / 'nothing'}:{model_dir}")
    elif where == "cwd":
        monkeypatch.chdir(model_dir)
    else:
        models_dir = str(model_dir)
    with models.search_context(models_dir):
        op = build_op("language_id_score_filter", {"lang": "en"}, "process[0]")
    assert op.model_locations()["lid"].path == str(model_dir / "lid.176.bin")


def test_language_id_keeps_the_wanted_language(model_dir):
    with models.search_context(str(model_dir)):
        en = build_op("language_id_score_filter", {"lang": "en", "min_score": 0.8}, "p")
        any_lang = build_op("language_id_score_filter", {"min_score": 0.9}, "p")
        zh_or_en = build_op("language_id_score_filter", {"lang": ["zh", "en"], "min_score": 0.8}, "p")
    table = pa.table({"text": EN + ZH})
    stats = en.compute_stats(table)
    assert stats["lang"].to_pylist() == ["en", "en", "zh", "zh"]
    assert all(s > 0.9 for s in stats["lang_score"].to_pylist())
    assert en.process(table).column("text").to_pylist() == EN
    assert zh_or_en.process(table).num_rows == 4 and any_lang.process(table).num_rows == 4
    # the line feed is a space for fastText, as in DataJuicer (fastText refuses a '\n')
    assert en.compute_stats(pa.table({"text": ["the quick\nbrown fox"]}))["lang"].to_pylist() == ["en"]


def test_perplexity_is_low_on_text_like_the_training_text(model_dir):
    with models.search_context(str(model_dir)):
        op = build_op("perplexity_filter", {"lang": "en", "max_ppl": 100}, "p")
    table = pa.table({"text": EN + GIBBERISH + [""]})
    ppl = op.compute_stats(table)["perplexity"].to_pylist()
    assert all(p < 100 for p in ppl[:2]) and all(p > 100 for p in ppl[2:4]), ppl
    assert ppl[4] == 0.0  # no pieces: DataJuicer's 0.0
    assert all(round(p, 1) == p for p in ppl)
    assert op.process(table).column("text").to_pylist() == EN + [""]


def test_token_num_counts_the_tokenizer_tokens(model_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "EleutherAI/pythia-6.9b-deduped/tokenizer.json"))
    with models.search_context(str(model_dir)):
        op = build_op("token_num_filter", {"min_num": 9}, "p")
    texts = EN + ZH
    counts = op.compute_stats(pa.table({"text": texts}))["num_token"].to_pylist()
    assert counts == [len(tok.encode(t, add_special_tokens=False).ids) for t in texts]
    assert op.process(pa.table({"text": texts})).column("text").to_pylist() == [t for t, c in zip(texts, counts) if c >= 9]


def test_tokenization_true_uses_the_models(model_dir):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    sp.load(str(model_dir / "en.sp.model"))
    with models.search_context(str(model_dir)):
        words = build_op("words_num_filter", {"tokenization": True, "min_num": 1}, "p")
        alnum = build_op("alphanumeric_filter", {"tokenization": True, "min_ratio": 1.5}, "p")
    table = pa.table({"text": EN})
    assert words.compute_stats(table)["num_words"].to_pylist() == [len(sp.encode_as_pieces(t)) for t in EN]
    ratios = alnum.compute_stats(table)["alpha_token_ratio"].to_pylist()
    assert "alnum_ratio" not in alnum.compute_stats(table)
    assert all(r > 1.5 for r in ratios)  # characters per token: more than one


def test_a_model_is_loaded_once_per_process(model_dir):
    with models.search_context(str(model_dir)):
        a = build_op("perplexity_filter", {"max_ppl": 10}, "p")
        b = build_op("perplexity_filter", {"max_ppl": 99}, "p")
    a.warm_up()
    loaded = dict(models._loaded)
    b.process(pa.table({"text": EN}))
    assert models._loaded == loaded  # the second op and the partition reuse the loaded models
    assert a.model("lm") is b.model("lm")
    # an op shipped to a worker carries where its models are, not the models
    import pickle

    assert len(pickle.dumps(a)) < 10_000


@pytest.mark.parametrize("executor", ["default", pytest.param("ray", marks=pytest.mark.ray)])
def test_dj_process_runs_model_ops_end_to_end(model_dir, tmp_path, executor):
    rows = EN + ZH + GIBBERISH
    process = [{"language_id_score_filter": {"lang": "en", "min_score": 0.5}},
               {"perplexity_filter": {"lang": "en", "max_ppl": 100}},
               {"stopwords_filter": {"tokenization": True, "min_ratio": 0.0}}]
    path = recipe_file(tmp_path, process, rows, models_dir=str(model_dir), executor_type=executor)
    result = dj_process(path, "models-e2e", env={"DATA_JUICER_MODELS_CACHE": str(tmp_path / "none")})
    assert result.returncode == 0, result.stderr
    out = [json.loads(l) for l in (tmp_path / "out" / "result.jsonl").read_text().splitlines()]
    assert [r["text"] for r in out] == EN
    stats = [json.loads(l) for l in (tmp_path / "out" / "result_stats.jsonl").read_text().splitlines()]
    assert all(s["lang"] == "en" and s["lang_score"] >= 0.5 and s["perplexity"] < 100 for s in stats), stats


@pytest.mark.s3
def test_models_dir_on_s3_is_copied_to_a_local_cache(model_dir, tmp_path, s3_bucket, monkeypatch):
    import s3fs

    fs = s3fs.S3FileSystem()
    for name in ("lid.176.bin", "en.sp.model", "en.arpa.bin"):
        fs.put(str(model_dir / name), f"{s3_bucket}/models/{name}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with models.search_context(f"s3://{s3_bucket}/models"):
        op = build_op("perplexity_filter", {"max_ppl": 100}, "p")
    location = op.model_locations()["lm"]
    assert location.path == f"s3://{s3_bucket}/models/en.arpa.bin"
    assert location.cache.startswith(str(tmp_path / "cache"))
    kept = op.process(pa.table({"text": EN + GIBBERISH})).column("text").to_pylist()
    assert kept == EN
    assert Path(location.cache).read_bytes() == (model_dir / "en.arpa.bin").read_bytes()


@pytest.mark.parametrize("env,expected", [
    ({}, "~/.cache/data_juicer/models"),
    ({"CACHE_HOME": "/c"}, "/c/data_juicer/models"),
    ({"DATA_JUICER_CACHE_HOME": "/dj", "CACHE_HOME": "/c"}, "/dj/models"),
    ({"DATA_JUICER_MODELS_CACHE": "/m", "DATA_JUICER_CACHE_HOME": "/dj"}, "/m"),
])
def test_models_cache_follows_datajuicers_variables(env, expected):
    assert models.dj_models_cache(env) == str(Path(expected).expanduser())


def test_an_unreadable_model_fails_the_op_instead_of_dropping_rows(tmp_path):
    (tmp_path / "en.sp.model").write_bytes(b"not a model")
    (tmp_path / "en.arpa.bin").write_bytes(b"not a model either")
    with models.search_context(str(tmp_path)):
        op = build_op("perplexity_filter", {}, "p")
    with pytest.raises(Exception):
        op.process(pa.table({"text": EN}))
