"""Word-list filters: flagged words and stop words.

DataJuicer downloads its lists on first use; this engine never downloads. By default
it uses the small sample lists bundled in ops/assets/ (the ones the DJ vectors were
measured with: a few words for `en` and `zh`). Point `flagged_words_dir` /
`stopwords_dir` at a folder holding your own `*flagged_words*.json` /
`*stopwords*.json` files ({"lang": [words...]}) for real filtering."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import ClassVar, Optional

from pydantic import PrivateAttr, model_validator

from .base import register
from .text_utils import StatFilter, refine_words, refuse_tokenization, split_words


def load_word_lists(kind: str, directory: Optional[str]) -> dict[str, frozenset[str]]:
    """Every `*<kind>*.json` in `directory` (relative to the CWD), or the bundled sample
    list; lists of one language are concatenated and an 'all' union is added (as DJ does)."""
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


class WordListFilter(StatFilter):
    """Ratio of words (plus optional joined n-grams) that are in the `lang` list."""

    lang: str = "en"
    tokenization: bool = False
    use_words_aug: bool = False
    words_aug_group_sizes: list[int] = [2]
    words_aug_join_char: str = ""

    list_kind: ClassVar[str] = ""
    dir_field: ClassVar[str] = ""
    _words: frozenset[str] = PrivateAttr(default=frozenset())

    _no_model = refuse_tokenization("a SentencePiece model (<lang>.sp.model from DataJuicer's model hub)")

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
        return refine_words(split_words(text), lowercase=True, aug_group_sizes=sizes, aug_join_char=join)

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
    flagged_words_dir: Optional[str] = None  # None: the bundled sample list

    stat_key: ClassVar[str] = "flagged_words_ratio"
    list_kind: ClassVar[str] = "flagged_words"
    dir_field: ClassVar[str] = "flagged_words_dir"


@register("stopwords_filter")
class StopwordsFilter(WordListFilter):
    """Drops text with too few stop words, a proxy for non-prose."""

    min_ratio: float = 0.3
    max_ratio: float = 1.0
    stopwords_dir: Optional[str] = None  # None: the bundled sample list

    stat_key: ClassVar[str] = "stopwords_ratio"
    list_kind: ClassVar[str] = "stopwords"
    dir_field: ClassVar[str] = "stopwords_dir"
