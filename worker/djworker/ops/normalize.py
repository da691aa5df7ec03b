"""Normalising mappers: whitespace, punctuation, Unicode repair."""
from __future__ import annotations

import functools
from typing import ClassVar, Optional

import ftfy
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import field_validator

from .base import Mapper, register
from .ftfy_shortcut import shortcut
from .text_utils import as_array, map_rows, re2_class, require_text, various_whitespaces


@functools.cache
def whitespace_table() -> dict[int, str]:
    return {ord(ch): " " for ch in various_whitespaces()}


@functools.cache
def python_spaces() -> str:
    """Every code point str.strip() removes (str.isspace())."""
    return "".join(chr(cp) for cp in range(0x110000) if chr(cp).isspace())


@functools.cache
def whitespace_work() -> str:
    """RE2 pattern of the rows the mapper changes: an odd space anywhere (the set
    holds ' ' itself, a no-op), or str.isspace() whitespace at either end."""
    space = re2_class(map(ord, python_spaces()))
    return f"^{space}|{space}$|{odd_spaces()}"


@functools.cache
def odd_spaces() -> str:
    return re2_class(map(ord, various_whitespaces().replace(" ", "")))


@register("whitespace_normalization_mapper")
class WhitespaceNormalizationMapper(Mapper):
    """str.strip(), then each of 23 odd spaces becomes ' ' one for one; runs are not
    collapsed and ZWJ emoji sequences break apart.

    Done in Arrow on the rows that need it: `utf8_trim` with exactly the characters
    str.isspace() accepts is str.strip(), and replacing each match of a one-code-point
    class by ' ' is the translate table (every entry maps one code point to ' ')."""

    def map_text(self, text: str) -> str:
        return text.strip().translate(whitespace_table())

    def warm_up(self) -> None:
        whitespace_work()  # scans all of Unicode once: ~0.1 s

    def map_column(self, texts: pa.ChunkedArray) -> pa.Array:
        require_text(self.op_name, texts)
        column = as_array(texts)
        where = pc.match_substring_regex(column, whitespace_work())
        if not pc.any(where).as_py():
            return column
        rows = pc.filter(column, where)
        fixed = pc.replace_substring_regex(pc.utf8_trim(rows, python_spaces()), odd_spaces(), " ")
        return pc.replace_with_mask(column, where, fixed.cast(column.type))


# DJ's table: the fullwidth digit １ really maps to '"', and ‘ is not mapped.
PUNCTUATION = {
    "，": ",", "、": ",", "。": ".",
    "„": '"', "”": '"', "“": '"', "«": '"', "»": '"', "」": '"', "「": '"', "《": '"', "》": '"',
    "１": '"',
    "´": "'", "’": "'", "∶": ":", "：": ":", "？": "?", "！": "!", "（": "(", "）": ")", "；": ";",
    "–": "-", "━": "-", "►": "-", "—": " - ", "．": ". ", "～": "~", "…": "...",
    "〈": "<", "〉": ">", "【": "[", "】": "]", "％": "%",
}  # fmt: skip


@register("punctuation_normalization_mapper")
class PunctuationNormalizationMapper(Mapper):
    """Maps CJK/fullwidth/typographic punctuation to ASCII through a fixed table."""

    table: ClassVar[dict[int, str]] = {ord(k): v for k, v in PUNCTUATION.items()}

    def map_text(self, text: str) -> str:
        return text.translate(self.table)

    def map_column(self, texts: pa.ChunkedArray) -> pa.Array:
        require_text(self.op_name, texts)
        # Every key is non-ASCII, so ASCII rows are left as they are.
        return map_rows(texts, self.map_text, pc.invert(pc.string_is_ascii(texts)))


@functools.cache
def ftfy_config(normalization: str) -> ftfy.TextFixerConfig:
    # What ftfy.fix_text(text, normalization=…) builds, as DJ calls it.
    return ftfy.TextFixerConfig(explain=False, normalization=normalization)


@register("fix_unicode_mapper")
class FixUnicodeMapper(Mapper):
    """ftfy 6.3.1 `fix_text` with its defaults and the given normalisation.

    Rows that ftfy provably leaves alone (no '&', no character a fixer acts on, no
    mojibake pattern, already in the normal form: ftfy_shortcut.py says why that is
    exact) are found over the whole column with pyarrow.compute and never leave
    Arrow; the other rows go through ftfy's own loop with the no-op steps skipped."""

    normalization: Optional[str] = None

    @field_validator("normalization")
    @classmethod
    def _known_form(cls, value: Optional[str]) -> Optional[str]:
        if value and value.upper() not in {"NFC", "NFKC", "NFD", "NFKD"}:
            raise ValueError(f"normalization must be one of NFC, NFKC, NFD, NFKD (any case), got {value!r}")
        return value

    def form(self) -> str:
        return (self.normalization or "NFC").upper()

    def map_text(self, text: str) -> str:
        return ftfy.fix_text(text, ftfy_config(self.form()))

    def warm_up(self) -> None:
        shortcut()

    def map_column(self, texts: pa.ChunkedArray) -> pa.Array:
        require_text(self.op_name, texts)
        fast, config = shortcut(), ftfy_config(self.form())
        if fast is None:
            return map_rows(texts, self.map_text)
        column = as_array(texts)
        return map_rows(column, lambda text: fast.fix_text(text, config), fast.needs_fixing(column, self.form()))
