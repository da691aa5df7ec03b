"""The registry: every DataJuicer text op is there under DJ's name, with DJ's
parameter names and defaults, and a bad recipe entry fails with a message to act on."""

from __future__ import annotations

import json
import pickle
import sys

import pytest
from pydantic import ValidationError

from djworker.errors import RecipeError
from djworker.ops.base import Deduplicator, Filter, Mapper
from djworker.ops.catalog import MODEL_OPS, build_op, registered_ops

MAX = sys.maxsize
# DataJuicer: each op's own parameters and defaults. The word-list folders default to
# None here (the bundled sample lists) where DJ defaults to its download cache.
EXPECTED = {
    "clean_links_mapper": {"pattern": None, "repl": ""},
    "clean_email_mapper": {"pattern": None, "repl": ""},
    "clean_html_mapper": {},
    "clean_ip_mapper": {"pattern": None, "repl": ""},
    "clean_copyright_mapper": {},
    "whitespace_normalization_mapper": {},
    "punctuation_normalization_mapper": {},
    "fix_unicode_mapper": {"normalization": None},
    "remove_long_words_mapper": {"min_len": 1, "max_len": MAX},
    "remove_repeat_sentences_mapper": {
        "lowercase": False, "ignore_special_character": True, "min_repeat_sentence_length": 2, "tokenizer": None,
    },
    "remove_specific_chars_mapper": {"chars_to_remove": "◆●■►▼▲▴∆▻▷❖♡□"},
    "remove_table_text_mapper": {"min_col": 2, "max_col": 20},
    "remove_header_mapper": {"drop_no_head": True},
    "remove_comments_mapper": {"doc_type": "tex", "inline": True, "multiline": True},
    "remove_bibliography_mapper": {},
    "text_length_filter": {"min_len": 10, "max_len": MAX},
    "words_num_filter": {"lang": "en", "tokenization": False, "min_num": 10, "max_num": MAX},
    "alphanumeric_filter": {"tokenization": False, "min_ratio": 0.25, "max_ratio": MAX},
    "average_line_length_filter": {"min_len": 10, "max_len": MAX},
    "maximum_line_length_filter": {"min_len": 10, "max_len": MAX},
    "character_repetition_filter": {"rep_len": 10, "min_ratio": 0.0, "max_ratio": 0.5},
    "word_repetition_filter": {"lang": "en", "tokenization": False, "rep_len": 10, "min_ratio": 0.0, "max_ratio": 0.5},
    "special_characters_filter": {"min_ratio": 0.0, "max_ratio": 0.25},
    "flagged_words_filter": {
        "lang": "en", "tokenization": False, "min_ratio": 0.0, "max_ratio": 0.045, "flagged_words_dir": None,
        "use_words_aug": False, "words_aug_group_sizes": [2], "words_aug_join_char": "",
    },
    "stopwords_filter": {
        "lang": "en", "tokenization": False, "min_ratio": 0.3, "max_ratio": 1.0, "stopwords_dir": None,
        "use_words_aug": False, "words_aug_group_sizes": [2], "words_aug_join_char": "",
    },
    "suffix_filter": {"suffixes": []},
    "specified_field_filter": {"field_key": "", "target_value": []},
    "document_deduplicator": {"lowercase": False, "ignore_non_character": False},
    "document_simhash_deduplicator": {
        "tokenization": "space", "window_size": 6, "lowercase": True, "ignore_pattern": None, "num_blocks": 6,
        "hamming_distance": 4,
    },
    "document_minhash_deduplicator": {
        "tokenization": "space", "window_size": 5, "lowercase": True, "ignore_pattern": None, "num_permutations": 256,
        "jaccard_threshold": 0.7, "num_bands": None, "num_rows_per_band": None, "tokenizer_model": None,
    },
    "expand_macro_mapper": {},
    "remove_words_with_incorrect_substrings_mapper": {"lang": "en", "tokenization": False, "substrings": None},
    "replace_content_mapper": {"pattern": None, "repl": ""},
    "remove_non_chinese_character_mapper": {"keep_alphabet": True, "keep_number": True, "keep_punc": True},
    "chinese_convert_mapper": {"mode": "s2t"},
    "text_chunk_mapper": {
        "max_len": None, "split_pattern": r"\n\n", "overlap_len": 0, "tokenizer": None, "trust_remote_code": False,
    },
    "python_lambda_mapper": {"lambda_str": "", "batched": False},
    "python_file_mapper": {"file_path": "", "function_name": "process_single", "batched": False},
    "specified_numeric_field_filter": {"field_key": "", "min_value": -MAX, "max_value": MAX},
    "general_field_filter": {"filter_condition": ""},
}  # fmt: skip
BASE = {"text_key", "batch_size", "num_proc", "skip_op_error", "accelerator", "cpu_required", "mem_required"}
FILTER_BASE = BASE | {"min_closed_interval", "max_closed_interval", "reversed_range"}


def test_every_op_registers_under_its_datajuicer_name():
    assert set(EXPECTED) <= set(registered_ops())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_op_has_datajuicer_parameters_and_defaults(name):
    cls = registered_ops()[name]
    base = FILTER_BASE if issubclass(cls, Filter) else BASE
    own = {k: f.default for k, f in cls.model_fields.items() if k not in base}
    assert own == EXPECTED[name]
    assert issubclass(cls, (Mapper, Filter, Deduplicator))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_op_builds_with_defaults_and_is_a_frozen_picklable_value(name):
    op = build_op(name, {}, "process[0]")
    assert op.op_name == name
    json.dumps(op.params())  # feeds the checkpoint key
    assert pickle.loads(pickle.dumps(op)) == op  # shipped to worker processes
    with pytest.raises(ValidationError):
        op.text_key = "other"


def test_unknown_parameter_names_the_key_and_suggests_the_right_one():
    with pytest.raises(RecipeError) as err:
        build_op("text_length_filter", {"min_length": 5}, "process[2]")
    assert str(err.value) == "process[2].text_length_filter: unknown parameter 'min_length' (did you mean 'min_len'?)"


def test_wrong_type_names_the_key_and_value():
    with pytest.raises(RecipeError, match=r"process\[0\]\.words_num_filter: min_num: .*\(got 'ten'\)"):
        build_op("words_num_filter", {"min_num": "ten"}, "process[0]")


def test_unknown_op_suggests_the_closest_name():
    with pytest.raises(RecipeError, match="did you mean 'text_length_filter'"):
        build_op("text_lenght_filter", {}, "process[0]")


@pytest.mark.parametrize("name", sorted(MODEL_OPS))
def test_model_op_is_refused_with_the_model_it_needs(name):
    with pytest.raises(RecipeError, match=f"{name}.*needs .*does not download"):
        build_op(name, {}, "process[1]")


@pytest.mark.parametrize(
    "name,args,needs",
    [
        ("words_num_filter", {"tokenization": True, "lang": "xx"}, "SentencePiece model 'xx.sp.model' not found"),
        ("word_repetition_filter", {"tokenization": True, "lang": "xx"}, "SentencePiece model 'xx.sp.model' not found"),
        ("flagged_words_filter", {"tokenization": True, "lang": "xx"}, "SentencePiece model 'xx.sp.model' not found"),
        ("stopwords_filter", {"tokenization": True, "lang": "xx"}, "SentencePiece model 'xx.sp.model' not found"),
        ("alphanumeric_filter", {"tokenization": True}, "Hugging Face tokenizer .* not found"),
        ("document_minhash_deduplicator", {"tokenization": "sentencepiece"}, "SentencePiece.*which this engine does not download"),
    ],
)
def test_option_that_needs_a_model_is_refused_up_front(name, args, needs, monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_JUICER_MODELS_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(RecipeError, match=needs):
        build_op(name, args, "process[0]")


@pytest.mark.parametrize(
    "name,args,message",
    [
        ("fix_unicode_mapper", {"normalization": "NFX"}, "normalization must be one of"),
        ("document_simhash_deduplicator", {"hamming_distance": 6}, "must be less than num_blocks"),
        ("document_simhash_deduplicator", {"tokenization": "words"}, "tokenization"),
        ("document_minhash_deduplicator", {"num_bands": 30, "num_rows_per_band": 10}, "exceeds num_permutations"),
        ("stopwords_filter", {"lang": "xx"}, "lang 'xx' has no stopwords list"),
        ("flagged_words_filter", {"flagged_words_dir": "/nonexistent/lists"}, "does not exist"),
        ("remove_repeat_sentences_mapper", {"tokenizer": "print('hi')"}, "one-argument lambda"),
        ("clean_links_mapper", {"pattern": "r'(unclosed'"}, "pattern"),
        ("document_minhash_deduplicator", {"ignore_pattern": "[a-"}, "ignore_pattern"),
        ("chinese_convert_mapper", {"mode": "s2x"}, r"chinese_convert_mapper: mode: .*'s2t'.*\(got 's2x'\)"),
        ("replace_content_mapper", {"pattern": ["a", "b"], "repl": ["x"]}, "repl has 1 entries for 2 patterns"),
        ("replace_content_mapper", {"pattern": ["a", "(b"]}, r"pattern: .*'\(b' is not a valid regex"),
        ("remove_words_with_incorrect_substrings_mapper", {"tokenization": True}, "tokenization=True needs"),
        ("text_chunk_mapper", {"split_pattern": None}, "max_len and split_pattern cannot both be None"),
        ("text_chunk_mapper", {"max_len": 5, "overlap_len": 5}, r"overlap_len \(5\) must be less than max_len"),
        ("text_chunk_mapper", {"max_len": 0}, r"max_len: .*greater than 0"),
        ("text_chunk_mapper", {"tokenizer": "gpt2"}, "tokenizer='gpt2' needs a Hugging Face tokenizer"),
        ("text_chunk_mapper", {"split_pattern": "(x"}, "split_pattern: not a valid regex"),
        ("python_lambda_mapper", {"lambda_str": "print('x')"}, "lambda_str: must be the text of a lambda"),
        ("python_lambda_mapper", {"lambda_str": "lambda a, b: a"}, "exactly one argument"),
        ("python_lambda_mapper", {"lambda_str": "lambda s: {"}, "lambda_str: invalid lambda function"),
        ("python_file_mapper", {"file_path": "/nonexistent/fn.py"}, "file_path: '/nonexistent/fn.py' does not exist"),
        ("general_field_filter", {"filter_condition": "num >"}, "filter_condition: invalid filter condition"),
    ],
)
def test_bad_argument_is_refused_at_build_time(name, args, message):
    with pytest.raises(RecipeError, match=message):
        build_op(name, args, "process[0]")


def test_word_list_folder_is_resolved_against_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "my_stopwords.json").write_text(json.dumps({"en": ["zebra"]}))
    monkeypatch.chdir(tmp_path)
    op = build_op("stopwords_filter", {"stopwords_dir": "lists", "min_ratio": 0.5}, "process[0]")
    import pyarrow as pa

    out = op.process(pa.table({"text": ["zebra zebra", "the the"]}))
    assert out.column("text").to_pylist() == ["zebra zebra"]


@pytest.mark.parametrize(
    "source,args,message",
    [
        ("def other(s):\n    return s\n", {}, "function 'process_single' not found"),
        ("process_single = 3\n", {}, "'process_single' .* is not callable"),
        ("def process_single(a, b):\n    return a\n", {}, "must take exactly one argument, not 2"),
    ],
)
def test_python_file_mapper_checks_the_file_when_the_recipe_is_built(tmp_path, source, args, message):
    (tmp_path / "fn.py").write_text(source)
    with pytest.raises(RecipeError, match=rf"process\[0\]\.python_file_mapper: .*{message}"):
        build_op("python_file_mapper", {"file_path": str(tmp_path / "fn.py"), **args}, "process[0]")


def test_python_file_mapper_refuses_a_file_that_is_not_python(tmp_path):
    (tmp_path / "fn.txt").write_text("def process_single(s):\n    return s\n")
    with pytest.raises(RecipeError, match=r"file_path: .*fn.txt' is not a Python file"):
        build_op("python_file_mapper", {"file_path": str(tmp_path / "fn.txt")}, "process[0]")


def test_python_file_mapper_travels_without_its_file_and_keys_checkpoints_by_its_source(tmp_path):
    import pyarrow as pa

    path = tmp_path / "fn.py"
    path.write_text("def process_single(s):\n    return {'text': s['text'] + '!'}\n")
    op = build_op("python_file_mapper", {"file_path": str(path)}, "process[0]")
    path.write_text("def process_single(s):\n    return {'text': s['text'] + '?'}\n")
    edited = build_op("python_file_mapper", {"file_path": str(path)}, "process[0]")
    assert op.params() != edited.params()  # an edited file never reuses a stale checkpoint
    path.unlink()
    shipped = pickle.loads(pickle.dumps(op))
    assert shipped.process(pa.table({"text": ["a"]})).column("text").to_pylist() == ["a!"]
