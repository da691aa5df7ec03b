"""Measure DataJuicer 1.6.1's own ops and write their vectors to tests/data/dj-op-vectors/.

Covers the ops in SPECS below. It needs py-data-juicer 1.6.1 (and opencc 1.1.9), which
the project venv does not hold, so run it with a throwaway venv; CI never runs it:

    python3.11 -m venv /tmp/djvenv
    /tmp/djvenv/bin/pip install py-data-juicer==1.6.1 ray==2.60.0 opencc==1.1.9
    /tmp/djvenv/bin/python scripts/make-dj-op-vectors.py

Inputs: the shared 404-line corpus (read back from whitespace_normalization_mapper.jsonl)
plus the EXTRA texts below, or, for field filters, the FIELD_SAMPLES. How each op kind is
driven (batched mapper call, single-sample filter, a NestedDataset run for the ops whose
semantics live in the executor) is said next to it; the line format is in the folder's
README.md. Existing files for these ops are overwritten; no other file is touched."""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "data" / "dj-op-vectors"

EXTRA = [
    # LaTeX macros: \newcommand, \newcommand*, \def, use at the end, in a word, redefinition, CRLF, non-ASCII values
    "\\newcommand{\\R}{\\mathbb{R}}\nLet $x \\in \\R$ and \\R.",
    "\\newcommand*{\\eps}{\\varepsilon}\n\\def\\N{\\mathbb{N}}\nTake \\eps>0 and n \\in \\N, \\Nat stays, end \\eps",
    "\\def \\foo {bar}\n\\foo \\foo1 \\foobar \\foo}",
    "\\newcommand{\\a}{one}\n\\newcommand{\\a}{two}\n\\def\\a{three}\nuse \\a here",
    "\\newcommand{\\x}{y}\r\nuse \\x here\r\n",
    "\\newcommand{\\zh}{中文}\n\\zh 字 \\zh.",
    "\\newcommand{\\tab}{a\\tb}\nx \\tab y",
    "\\newcommand{\\bs}{\\\\}\nline\\bs next \\bs",
    "\\newcommand{\\arg}[1]{#1!}\n\\arg{x} stays",
    "no macros here \\newcommand without braces",
    # words with bad substrings, special characters around them
    "visit http://example.com or www.site.org now",
    "«https://x.y» (www) ..href.. a//b  double  spaces\tand\ttabs\n\n\nblank lines",
    "\t\t leading tabs http\n trailing www \n",
    # Chinese: simplified, traditional, Japanese, mixed with punctuation and latin
    "汉字简体中文，测试转换。发展与进步！",
    "漢字繁體中文，測試轉換。發展與進步！",
    "鼠标和软件、打印机、内存、数据库",
    "滑鼠與軟體、印表機、記憶體、資料庫",
    "香港的士和巴士；網絡、信息",
    "日本の旧字體：國學、廣場、讀賣",
    "中文ABC123，混合 text：标点《书名》（括号）“引号”· 100% & ＆ a-b / c+d * e.",
    "ひらがなカタカナ한국어Ελληνικά𠀀𪚥",
    # chunking: paragraphs, long text, CRLF, sentence ends
    "Para one.\n\nPara two is longer.\n\n\n\nPara three.\n\n",
    "A" * 95 + "\n\n" + "B" * 40,
    "Sentence one. Sentence two. Sentence three. Sentence four. Sentence five. Sentence six.",
    "line\r\n\r\nwith CRLF\r\n\r\nparagraphs",
    "\n\n\n\n",
    "中文句子一。中文句子二。中文句子三。中文句子四。中文句子五。中文句子六。中文句子七。中文句子八。",
    " ".join(f"word{i}" for i in range(120)),
]

LAMBDAS = {
    "strip_lower": "lambda s: {**s, 'text': s['text'].strip().lower()}",
    "reverse_len": "lambda s: {'text': s['text'][::-1], 'n_chars': len(s['text'])}",
    "batched_upper": "lambda b: {'text': [t.upper() for t in b['text']]}",
}

SPECS = [
    ("expand_macro_mapper", "", {}),
    ("remove_words_with_incorrect_substrings_mapper", "", {}),
    ("remove_words_with_incorrect_substrings_mapper", "custom", {"substrings": ["ing", "ü", "@"]}),
    ("remove_words_with_incorrect_substrings_mapper", "empty_substring", {"substrings": [""]}),
    ("replace_content_mapper", "", {}),
    ("replace_content_mapper", "digits", {"pattern": "\\d+", "repl": "<NUM>"}),
    ("replace_content_mapper", "two_patterns", {"pattern": ["r'\\s+'", "(e)(.)"], "repl": ["_", "\\2\\1"]}),
    ("replace_content_mapper", "one_repl_for_list", {"pattern": ["a", "[.。]$"], "repl": "#"}),
    ("remove_non_chinese_character_mapper", "", {}),
    ("remove_non_chinese_character_mapper", "only_chinese",
     {"keep_alphabet": False, "keep_number": False, "keep_punc": False}),
    ("remove_non_chinese_character_mapper", "no_punc", {"keep_punc": False}),
    *[("chinese_convert_mapper", "" if m == "s2t" else m, {} if m == "s2t" else {"mode": m})
      for m in ("s2t", "t2s", "s2tw", "tw2s", "s2hk", "hk2s", "s2twp", "tw2sp", "t2tw", "tw2t", "hk2t", "t2hk",
                "t2jp", "jp2t")],
    ("text_chunk_mapper", "", {}),
    ("text_chunk_mapper", "len20", {"max_len": 20, "split_pattern": None}),
    ("text_chunk_mapper", "len20_overlap5", {"max_len": 20, "overlap_len": 5, "split_pattern": None}),
    ("text_chunk_mapper", "len30_paragraphs", {"max_len": 30}),
    ("text_chunk_mapper", "len30_overlap10_sentences", {"max_len": 30, "overlap_len": 10, "split_pattern": "[.。]"}),
    ("text_chunk_mapper", "captured_newline", {"split_pattern": "(\\n)"}),
    ("python_lambda_mapper", "", {}),
    *[("python_lambda_mapper", tag, {"lambda_str": src, **({"batched": True} if "batched" in tag else {})})
      for tag, src in LAMBDAS.items()],
    ("python_file_mapper", "", {"file_path": "assets/python_file_mapper_functions.py"}),
    ("python_file_mapper", "batched",
     {"file_path": "assets/python_file_mapper_functions.py", "function_name": "title_batch", "batched": True}),
    ("specified_numeric_field_filter", "score_0_10", {"field_key": "meta.score", "min_value": 0, "max_value": 10}),
    ("specified_numeric_field_filter", "score_0_10_reversed",
     {"field_key": "meta.score", "min_value": 0, "max_value": 10, "reversed_range": True}),
    ("specified_numeric_field_filter", "num_open",
     {"field_key": "num", "min_value": 1, "max_value": 30, "min_closed_interval": False, "max_closed_interval": False}),
    ("general_field_filter", "", {}),
    ("general_field_filter", "chain", {"filter_condition": "10 < num <= 30 and text != 'nothing here'"}),
    ("general_field_filter", "meta_or", {"filter_condition": "meta.lang in ['en', 'zh'] or num == 3"}),
    ("general_field_filter", "not_in_unary", {"filter_condition": "num not in (1, 2) and -num < -0.5"}),
    ("general_field_filter", "not_meta", {"filter_condition": "not meta.flag or meta.score >= 5"}),
]

# Single-sample filters: each line is one sample with these extra fields.
FIELD_SAMPLES = [
    ("Hello world.", {"num": 12, "meta": {"score": 5, "lang": "en", "flag": False}}),
    ("nothing here", {"num": 20, "meta": {"score": 0, "lang": "zh", "flag": True}}),
    ("Short one.", {"num": 3, "meta": {"score": -2, "lang": "fr", "flag": True}}),
    ("Another text", {"num": 30, "meta": {"score": 10, "lang": "en", "flag": True}}),
    ("Edge", {"num": 10, "meta": {"score": 10.0, "lang": "de", "flag": False}}),
    ("Float", {"num": 1.5, "meta": {"score": 2.5, "lang": "en", "flag": True}}),
    ("Big", {"num": 31, "meta": {"score": 1e20, "lang": "zh", "flag": True}}),
    ("Text score", {"num": 2, "meta": {"score": "7", "lang": "en", "flag": True}}),
    ("Bad score", {"num": 1, "meta": {"score": "abc", "lang": "en", "flag": True}}),
    ("Empty score", {"num": 0, "meta": {"score": "", "lang": "en", "flag": False}}),
    ("Null score", {"num": None, "meta": {"score": None, "lang": None, "flag": None}}),
    ("NaN score", {"num": 15, "meta": {"score": "nan", "lang": "en", "flag": True}}),
    ("Inf score", {"num": 25, "meta": {"score": "inf", "lang": "en", "flag": True}}),
    ("Spaced", {"num": 5, "meta": {"score": " 3 ", "lang": "en", "flag": True}}),
    ("Exp", {"num": 7, "meta": {"score": "1e1", "lang": "zh", "flag": True}}),
    ("Negative zero", {"num": -1, "meta": {"score": -0.0, "lang": "en", "flag": True}}),
    ("Tiny", {"num": 0.5, "meta": {"score": 1e-9, "lang": "en", "flag": True}}),
]

PYTHON_FILE = '''"""Functions for the python_file_mapper vectors."""


def process_single(sample):
    text = sample["text"]
    return {"text": " ".join(text.split()), "words": len(text.split())}


def title_batch(batch):
    return {"text": [t.title() for t in batch["text"]]}
'''


def corpus() -> list[str]:
    lines = (VECTORS / "whitespace_normalization_mapper.jsonl").read_text("utf-8").split("\n")
    return [json.loads(line)["input"] for line in lines if line] + EXTRA


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def mapper_lines(op, name, args, texts):
    """Batched mappers get every input in one batch, as the executor's map does."""
    if name == "text_chunk_mapper":
        # Per sample, so a sample that fails does not hide the others' chunks.
        lines = []
        for text in texts:
            line = {"op": name, "args": args, "input": text}
            try:
                line["output"] = op.process_batched({"text": [text], "row": [0]})["text"]
            except BaseException as err:  # noqa: BLE001  (recorded in the vector)
                line.update(output=None, error=error_text(err))
            line["stats"] = {}
            lines.append(line)
        return lines
    out = op.process_batched({"text": list(texts)})["text"]
    return [{"op": name, "args": args, "input": t, "output": o, "stats": {}} for t, o in zip(texts, out)]


def dataset_lines(op, name, args, texts):
    """Python mappers: their field merging is the executor's, so run a dataset through op.run."""
    from data_juicer.core.data import NestedDataset

    samples = [{"text": t, "meta": {"i": i}} for i, t in enumerate(texts)]
    result = op.run(NestedDataset.from_list(samples)).to_list()
    assert len(result) == len(samples)
    lines = []
    for sample, out in zip(samples, result):
        fields = {k: v for k, v in sample.items() if k != "text"}
        out_fields = {k: v for k, v in out.items() if k != "text"}
        lines.append({"op": name, "args": args, "input": sample["text"], "fields": fields, "output": out["text"],
                      "output_fields": out_fields, "stats": {}})
    return lines


def filter_lines(op, name, args):
    """Single-sample filters: each sample alone, stats first, then the keep decision."""
    lines = []
    for text, fields in FIELD_SAMPLES:
        sample = {"text": text, **json.loads(json.dumps(fields)), "__dj__stats__": {}}
        line = {"op": name, "args": args, "input": text, "fields": fields}
        try:
            sample = op.compute_stats_single(sample)
            keep = op.process_single(sample)
            line.update(output=text if keep else None, stats=sample["__dj__stats__"])
        except BaseException as err:  # noqa: BLE001  (recorded in the vector)
            line.update(output=None, stats={}, error=error_text(err))
        lines.append(line)
    return lines


def main() -> None:
    os.environ.setdefault("DATA_JUICER_ASSETS_CACHE", "/nonexistent")
    (VECTORS / "assets" / "python_file_mapper_functions.py").write_text(PYTHON_FILE, "utf-8")
    os.chdir(VECTORS)  # the python_file_mapper args name the file relative to this folder
    from data_juicer.ops.base_op import OPERATORS
    from data_juicer.utils.lazy_loader import LazyLoader

    def refuse_install(*args, **kwargs):
        raise RuntimeError(f"DataJuicer tried to install {args[1:] or kwargs} at run time; install it beforehand")

    LazyLoader._install_package = classmethod(refuse_install)  # as for the first vectors: nothing installs mid-run

    texts = corpus()
    for name, tag, args in SPECS:
        op = OPERATORS.modules[name](**args)
        if name.endswith("_filter"):
            lines = filter_lines(op, name, args)
        elif name.startswith("python_"):
            lines = dataset_lines(op, name, args, texts)
        else:
            lines = mapper_lines(op, name, args, texts)
        path = VECTORS / (f"{name}__{tag}.jsonl" if tag else f"{name}.jsonl")
        path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), "utf-8")
        print(f"{path.name}: {len(lines)} lines", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
