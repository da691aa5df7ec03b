"""The bundled ROOTS word lists (BigScience data-preparation) against the cases of DataJuicer's
own tests for these filters, which were computed with DataJuicer's real lists; and the
overrides (a *_dir argument, DATA_JUICER_ASSETS_CACHE)."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest

from djworker.ops.catalog import build_op
from djworker.ops.word_lists import load_word_lists

PUNCTUATION = "，。、„”“«»１」「《》´∶：？！（）；–—．～’…━〈〉【】％►"


@pytest.fixture(autouse=True)
def no_assets_cache(monkeypatch):
    monkeypatch.delenv("DATA_JUICER_ASSETS_CACHE", raising=False)
    monkeypatch.delenv("DATA_JUICER_CACHE_HOME", raising=False)


def kept(op, texts):
    return op.process(pa.table({"text": texts})).column("text").to_pylist()


def test_stopwords_en_as_datajuicer_tests_expect():
    texts = ["Today is Sunday and it's a happy day!", "Today is Sund Sund Sund Sund Sunda and it's a happy day!",
             "a v s e c s f e f g a qkc", PUNCTUATION, "Do you need a cup of coffee?"]
    op = build_op("stopwords_filter", {"lang": "en", "min_ratio": 0.3}, "process[0]")
    assert kept(op, texts) == [texts[0], texts[1], texts[4]]


def test_flagged_words_en_as_datajuicer_tests_expect():
    texts = ["Today is anal cumshot day", "Fuck you doggystyle!", PUNCTUATION, "Do you need a cup of coffee?",
             "emoji表情测试下😊，😸31231\n"]
    op = build_op("flagged_words_filter", {"lang": "en", "max_ratio": 0.045}, "process[0]")
    assert kept(op, texts) == texts[2:]


def test_every_roots_language_is_bundled():
    langs = {"ar", "bn", "ca", "en", "es", "eu", "fr", "hi", "id", "pt", "ur", "vi", "zh"}
    stop, flagged = load_word_lists("stopwords", None), load_word_lists("flagged_words", None)
    assert langs | {"all"} == set(stop) == set(flagged)
    assert len(stop["en"]) > 250 and {"the", "and", "of", "you"} <= stop["en"]
    assert stop["all"] == frozenset().union(*(stop[l] for l in langs))


def test_real_prose_is_kept_by_a_published_recipe_setting():
    prose = ["It was the best of times, it was the worst of times, it was the age of wisdom.",
             "She walked to the market because she wanted to buy some bread for her family."]
    op = build_op("stopwords_filter", {"lang": "en", "min_ratio": 0.3}, "process[0]")
    assert kept(op, prose) == prose


def test_assets_cache_overrides_the_bundled_lists(tmp_path, monkeypatch):
    (tmp_path / "my_stopwords.json").write_text(json.dumps({"en": ["zebra"]}))
    monkeypatch.setenv("DATA_JUICER_ASSETS_CACHE", str(tmp_path))
    op = build_op("stopwords_filter", {"min_ratio": 0.5}, "process[0]")
    assert kept(op, ["zebra zebra", "the the"]) == ["zebra zebra"]
    # a cache without such files leaves the bundled lists in place
    flagged = build_op("flagged_words_filter", {}, "process[0]")
    assert kept(flagged, ["cumshot day", "nice day"]) == ["nice day"]
