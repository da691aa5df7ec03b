"""Regenerate tests/data/dj-model-vectors/: DataJuicer 1.6.1's model-based ops run over one
corpus with the tiny models of tests/support/tiny_models.py.

    .venv/bin/python -m tests.support.make_dj_model_vectors --dj-python /tmp/dj161/bin/python

`--dj-python` is the interpreter of a SEPARATE throwaway venv (never the project's) with
py-data-juicer==1.6.1 fasttext-predict kenlm sentencepiece aiohttp transformers==4.57.1
'huggingface-hub<1.0' 'datasets<4.5' installed (DataJuicer's datasets pin clashes with
transformers' hub pin; these ops use neither). This script builds the models with the
project venv, records their sha256 (the tests rebuild them and check the digests), then
runs itself under that interpreter with DataJuicer's model variables pointed at them."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "data" / "dj-model-vectors"
ASSETS = Path(__file__).resolve().parents[2] / "worker" / "djworker" / "ops" / "assets"

# (file stem, op, args); word-list dirs are filled in per side.
CASES = [
    ("language_id_score_filter__en", "language_id_score_filter", {"lang": "en", "min_score": 0.8}),
    ("language_id_score_filter__any_0.95", "language_id_score_filter", {"min_score": 0.95}),
    ("language_id_score_filter__zh_en_reversed", "language_id_score_filter",
     {"lang": ["zh", "en"], "min_score": 0.9, "reversed_range": True}),
    ("perplexity_filter__max100", "perplexity_filter", {"lang": "en", "max_ppl": 100}),
    ("perplexity_filter", "perplexity_filter", {}),
    ("token_num_filter__min8", "token_num_filter", {"min_num": 8}),
    ("alphanumeric_filter__tokenization", "alphanumeric_filter", {"tokenization": True, "min_ratio": 1.5}),
    ("words_num_filter__tokenization", "words_num_filter", {"tokenization": True, "min_num": 12}),
    ("word_repetition_filter__tokenization", "word_repetition_filter",
     {"tokenization": True, "rep_len": 3, "max_ratio": 0.2}),
    ("stopwords_filter__tokenization", "stopwords_filter", {"tokenization": True, "min_ratio": 0.05}),
    ("flagged_words_filter__tokenization_aug", "flagged_words_filter",
     {"tokenization": True, "use_words_aug": True, "max_ratio": 0.01}),
]
WORD_DIR_ARG = {"stopwords_filter": "stopwords_dir", "flagged_words_filter": "flagged_words_dir"}


def corpus() -> list[str]:
    from tests.support.tiny_models import chinese_lines, english_lines

    return (english_lines(24, seed=11) + chinese_lines(10, seed=12) + [
        "", " ", "\n", "The Quick Brown FOX.", "the the the the the the the the",
        "zzq xqj vvk kkq", "Qwxz Pfft Brrr!!", "hello world\nsecond line here", "line one\r\nline two\u2028three",
        "我们 today 去 school 读书", "cumshot anal day", "emoji 😊 test 31231", "a b c d e f g", "123 456 789",
        "people walk to school every morning and the weather is good",
        "Mixed 中文 and English text with 数字 42",
    ])


def measure(models: str, out: str) -> None:
    """Runs under DataJuicer's venv: each sample alone, as DataJuicer's executor feeds a
    single-sample op (a batched op's result does not depend on the other samples)."""
    from data_juicer.ops.base_op import OPERATORS

    texts = json.loads(Path(out, "corpus.json").read_text("utf-8"))
    for stem, name, args in CASES:
        args = dict(args)
        if name in WORD_DIR_ARG:
            args[WORD_DIR_ARG[name]] = str(ASSETS)
        op = OPERATORS.modules[name](**args)
        lines = []
        for text in texts:
            line = {"op": name, "args": args, "input": text}
            try:
                if op.is_batched_op():
                    samples = op.compute_stats({"text": [text], "__dj__stats__": [{}]})
                    stats, keep = samples["__dj__stats__"][0], list(op.process(samples))[0]
                else:
                    sample = op.compute_stats({"text": text, "__dj__stats__": {}})
                    stats, keep = sample["__dj__stats__"], op.process(sample)
                line["output"] = text if keep else None
                line["stats"] = {k: (v if isinstance(v, (str, int)) else float(v)) for k, v in stats.items()}
            except Exception as err:  # noqa: BLE001 - recorded: the engine must fail there too
                line["error"] = f"{type(err).__name__}: {err}"
            lines.append(line)
        Path(out, f"{stem}.jsonl").write_text("".join(json.dumps(l, ensure_ascii=False) + "\n" for l in lines),
                                             encoding="utf-8")


def digests(folder: Path) -> dict[str, str]:
    """sha256 of each model file; a SentencePiece model by its pieces and scores, since its
    file also records the (temporary) paths it was trained from."""
    def content(path: Path) -> bytes:
        if path.name.endswith(".sp.model"):
            import sentencepiece as spm

            sp = spm.SentencePieceProcessor()
            sp.load(str(path))
            return json.dumps([[sp.id_to_piece(i), sp.get_score(i)] for i in range(sp.get_piece_size())]).encode()
        return path.read_bytes()

    return {str(p.relative_to(folder)): hashlib.sha256(content(p)).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dj-python", help="python of the throwaway DataJuicer 1.6.1 venv")
    parser.add_argument("--measure", nargs=2, metavar=("MODELS", "OUT"), help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.measure:
        return measure(*ns.measure)
    from tests.support.tiny_models import build_all

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        models = build_all(Path(tmp) / "models")
        (OUT / "corpus.json").write_text(json.dumps(corpus(), ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
        (OUT / "models.json").write_text(json.dumps(digests(models), indent=1) + "\n")
        env = {**os.environ, "DATA_JUICER_MODELS_CACHE": str(models),
               "DATA_JUICER_EXTERNAL_MODELS_HOME": str(models), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        subprocess.run([ns.dj_python, "-m", "tests.support.make_dj_model_vectors", "--measure", str(models), str(OUT)],
                       check=True, env=env, cwd=tmp)


if __name__ == "__main__":
    main()
