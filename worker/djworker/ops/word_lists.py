"""Word-list filters: flagged words and stop words.

DataJuicer downloads its lists on first use; this engine never downloads. It bundles
the ROOTS filtering lists of BigScience's data-preparation repository (every language
they cover; provenance and licence in ops/assets/NOTICE.md). As in DataJuicer, a
folder of `*flagged_words*.json` / `*stopwords*.json` files ({"lang": [words...]})
overrides them: `flagged_words_dir` / `stopwords_dir` first, else the assets cache
named by `DATA_JUICER_ASSETS_CACHE` (or `DATA_JUICER_CACHE_HOME`/assets) when it holds
such files."""
from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import ClassVar, Optional

from pydantic import PrivateAttr, model_validator

from .base import register
from .text_utils import StatFilter, refine_words
from .uses_models import SentencePieceWords


def assets_cache(env: Optional[dict[str, str]] = None) -> Optional[Path]:
    """DataJuicer's assets cache when the environment names one (never the implicit default,
    so a stray DataJuicer download cannot change what a recipe keeps here)."""
    env = os.environ if env is None else env
    if env.get("DATA_JUICER_ASSETS_CACHE"):
        return Path(env["DATA_JUICER_ASSETS_CACHE"]).expanduser()
    if env.get("DATA_JUICER_CACHE_HOME"):
        return Path(env["DATA_JUICER_CACHE_HOME"]).expanduser() / "assets"
    return None


def load_word_lists(kind: str, directory: Optional[str]) -> dict[str, frozenset[str]]:
    """Every `*<kind>*.json` in `directory` (relative to the CWD), else in the assets cache,
    else the bundled list; lists of one language are concatenated and an 'all' union is
    added (as DJ does)."""
    cache = assets_cache() if directory is None else None
    if cache is not None and cache.is_dir() and any(kind in p.name for p in cache.glob("*.json")):
        directory = str(cache)
    if directory is None:
        files = [resources.files(__package__).joinpath(f"assets/{kind}.json")]
    else:
        folder = Path(directory).expanduser().resolve()
        if not folder.is_dir():
            raise ValueError(f"word-list folder {str(folder)!r} does not exist")
        files = sorted(p for p in folder.glob("*.json") if kind in p.name)
        if not files:
            raise ValueError(
                f"no *{kind}*.json file in {str(folder)!r}; DataJuicer would download one, this engine does not: "
                f"put a JSON object mapping language codes to word lists there"
            )
    lists: dict[str, list[str]] = {}
    for file in files:
        for lang, words in json.loads(file.read_text("utf-8")).items():
            lists.setdefault(lang, []).extend(words)
    if "all" not in lists:
        lists["all"] = [w for words in lists.values() for w in words]
    return {lang: frozenset(words) for lang, words in lists.items()}


class WordListFilter(SentencePieceWords, StatFilter):
    """Ratio of words (plus optional joined n-grams) that are in the `lang` list; with
    tokenization=True the words are the pieces of the `<lang>.sp.model` SentencePiece model."""

    lang: str = "en"
    tokenization: bool = False
    use_words_aug: bool = False
    words_aug_group_sizes: list[int] = [2]
    words_aug_join_char: str = ""

    list_kind: ClassVar[str] = ""
    dir_field: ClassVar[str] = ""
    _words: frozenset[str] = PrivateAttr(default=frozenset())

    @model_validator(mode="after")
    def _load_list(self):
        lists = load_word_lists(self.list_kind, getattr(self, self.dir_field))
        if self.lang not in lists:
            # DJ raises KeyError only when stats are computed; we refuse the recipe instead.
            raise ValueError(f"lang {self.lang!r} has no {self.list_kind} list (have: {', '.join(sorted(lists))})")
        self._words = lists[self.lang]  # carried along when the op is shipped to a worker
        return self

    def words(self, text: str) -> list[str]:
        sizes = self.words_aug_group_sizes if self.use_words_aug else ()
        join = self.words_aug_join_char
        return refine_words(self.raw_words(text), lowercase=True, aug_group_sizes=sizes, aug_join_char=join)

    def stat_of(self, text: str) -> float:
        words, listed = self.words(text), self._words  # a private attr costs a pydantic lookup per access
        if not words:
            return 0.0
        return min(sum(1 for w in words if w in listed) / len(words), 1.0)

    def bounds(self):
        return self.min_ratio, self.max_ratio


@register("flagged_words_filter")
class FlaggedWordsFilter(WordListFilter):
    """Drops text whose share of flagged words exceeds max_ratio."""

    min_ratio: float = 0.0
    max_ratio: float = 0.045
    flagged_words_dir: Optional[str] = None  # None: the assets cache, else the bundled ROOTS list

    stat_key: ClassVar[str] = "flagged_words_ratio"
    list_kind: ClassVar[str] = "flagged_words"
    dir_field: ClassVar[str] = "flagged_words_dir"


@register("stopwords_filter")
class StopwordsFilter(WordListFilter):
    """Drops text with too few stop words, a proxy for non-prose."""

    min_ratio: float = 0.3
    max_ratio: float = 1.0
    stopwords_dir: Optional[str] = None  # None: the assets cache, else the bundled ROOTS list

    stat_key: ClassVar[str] = "stopwords_ratio"
    list_kind: ClassVar[str] = "stopwords"
    dir_field: ClassVar[str] = "stopwords_dir"
