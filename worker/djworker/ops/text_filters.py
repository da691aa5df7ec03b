"""Per-row statistic filters: length, words, alphanumerics, lines, repetition and
special characters."""
from __future__ import annotations

import functools
import math
import re
import sys
from collections import Counter
from typing import ClassVar, Optional

import pyarrow as pa
import pyarrow.compute as pc
from .. import models
from .base import register
from .text_utils import (
    StatFilter,
    refine_words,
    require_text,
    special_character_set,
)
from .uses_models import ModelOp, SentencePieceWords


class WordStatFilter(SentencePieceWords, StatFilter):
    """A stat filter over words: whitespace-split, or with tokenization=True the pieces of
    the `<lang>.sp.model` SentencePiece model."""


@functools.cache
def ascii_special() -> bytes:
    return bytes(sorted(ord(c) for c in special_character_set() if ord(c) < 128))


@register("text_length_filter")
class TextLengthFilter(StatFilter):
    """Keeps rows whose text is min_len..max_len code points long; CRLF counts 2."""

    min_len: int = 10
    max_len: int = sys.maxsize

    stat_key: ClassVar[str] = "text_len"
    stat_type: ClassVar[pa.DataType] = pa.int64()

    def bounds(self):
        return self.min_len, self.max_len

    def stat_values(self, texts: pa.ChunkedArray) -> pa.Array:
        require_text(self.op_name, texts)
        return pc.cast(pc.utf8_length(texts), pa.int64()).combine_chunks()  # code points, like len(str)


@register("words_num_filter")
class WordsNumFilter(WordStatFilter):
    """Counts whitespace-split words with special characters stripped from both ends."""

    lang: str = "en"
    tokenization: bool = False
    min_num: int = 10
    max_num: int = sys.maxsize

    stat_key: ClassVar[str] = "num_words"
    stat_type: ClassVar[pa.DataType] = pa.int64()

    def bounds(self):
        return self.min_num, self.max_num

    def stat_of(self, text: str) -> int:
        return len(refine_words(self.raw_words(text)))


@register("alphanumeric_filter")
class AlphanumericFilter(ModelOp, StatFilter):
    """Share of code points with str.isalnum(), Unicode-wide.

    With tokenization=True the stat is alpha_token_ratio instead: isalpha() code points per
    token of DataJuicer's fixed Hugging Face tokenizer (EleutherAI/pythia-6.9b-deduped)."""

    tokenization: bool = False
    min_ratio: float = 0.25
    max_ratio: float = sys.maxsize

    stat_key: ClassVar[str] = "alnum_ratio"
    # Python's re `\w` is exactly isalnum() plus '_' (CPython's sre uses Py_UNICODE_ISALNUM).
    non_alnum: ClassVar[re.Pattern] = re.compile(r"[\W_]+")
    ascii_non_alnum: ClassVar[bytes] = bytes(c for c in range(128) if not chr(c).isalnum())

    def required_models(self) -> dict[str, models.ModelFile]:
        if not self.tokenization:
            return {}
        return {"tokenizer": models.ModelFile("hf_tokenizer", models.DEFAULT_HF_TOKENIZER)}

    @property
    def stat_key(self) -> str:  # type: ignore[override]
        return "alpha_token_ratio" if self.tokenization else "alnum_ratio"

    def bounds(self):
        return self.min_ratio, self.max_ratio

    def stat_of(self, text: str) -> float:
        if self.tokenization:
            tokens = len(self.model("tokenizer").tokenize(text))
            return sum(1 for ch in text if ch.isalpha()) / tokens if tokens else 0.0
        if not text:
            return 0.0
        if text.isascii():
            return len(text.encode().translate(None, self.ascii_non_alnum)) / len(text)
        return len(self.non_alnum.sub("", text)) / len(text)


@register("average_line_length_filter")
class AverageLineLengthFilter(StatFilter):
    """len(text) / number of splitlines() lines; break characters count in the numerator."""

    min_len: int = 10
    max_len: int = sys.maxsize

    stat_key: ClassVar[str] = "avg_line_length"

    def bounds(self):
        return self.min_len, self.max_len

    def stat_of(self, text: str) -> float:
        lines = text.splitlines()
        return len(text) / len(lines) if lines else 0.0


@register("maximum_line_length_filter")
class MaximumLineLengthFilter(StatFilter):
    """Longest splitlines() line; every Unicode line break splits."""

    min_len: int = 10
    max_len: int = sys.maxsize

    stat_key: ClassVar[str] = "max_line_length"
    stat_type: ClassVar[pa.DataType] = pa.int64()

    def bounds(self):
        return self.min_len, self.max_len

    def stat_of(self, text: str) -> int:
        return max(map(len, text.splitlines()), default=0)


@register("character_repetition_filter")
class CharacterRepetitionFilter(StatFilter):
    """Share of char n-grams in the top ⌊√distinct⌋ repeated n-grams."""

    rep_len: int = 10
    min_ratio: float = 0.0
    max_ratio: float = 0.5

    stat_key: ClassVar[str] = "char_rep_ratio"

    def bounds(self):
        return self.min_ratio, self.max_ratio

    def stat_of(self, text: str) -> float:
        n = self.rep_len
        counts = Counter(text[i : i + n] for i in range(len(text) - n + 1))
        if not counts:
            return 0.0
        freqs = sorted(counts.values(), reverse=True)
        singles = sum(1 for f in freqs if f == 1)
        top = min(int(math.sqrt(len(freqs))), len(freqs) - singles)
        total = sum(freqs)
        return sum(freqs[:top]) / total if total else 0.0


@register("word_repetition_filter")
class WordRepetitionFilter(WordStatFilter):
    """Share of lowercased word n-grams that occur more than once."""

    lang: str = "en"
    tokenization: bool = False
    rep_len: int = 10
    min_ratio: float = 0.0
    max_ratio: float = 0.5

    stat_key: ClassVar[str] = "word_rep_ratio"

    def bounds(self):
        return self.min_ratio, self.max_ratio

    def stat_of(self, text: str) -> float:
        n = self.rep_len
        words = refine_words(self.raw_words(text), lowercase=True)
        counts = Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
        total = sum(counts.values())
        return sum(f for f in counts.values() if f > 1) / total if total else 0.0


@register("special_characters_filter")
class SpecialCharactersFilter(StatFilter):
    """Share of code points in DJ's special set, which holds digits and spaces."""

    min_ratio: float = 0.0
    max_ratio: float = 0.25

    stat_key: ClassVar[str] = "special_char_ratio"

    def bounds(self):
        return self.min_ratio, self.max_ratio

    def stat_of(self, text: str) -> float:
        if not text:
            return 0.0
        if text.isascii():
            return (len(text) - len(text.encode().translate(None, ascii_special()))) / len(text)
        special = special_character_set()
        return sum(1 for ch in text if ch in special) / len(text)
