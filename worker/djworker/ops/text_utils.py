"""Shared building blocks of the text ops: DataJuicer's character sets, word split
and refinement, the null-text check, row mapping with a skip mask,
and the one-stat range filter."""
from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any, Callable, ClassVar, Iterable, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import field_validator

from .base import STATS_COLUMN, Filter


@functools.cache
def _char_sets() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath("assets/char_sets.json").read_text("utf-8"))


@functools.cache
def special_characters() -> str:
    """DJ's special-character set as one string of its 1,618 single code points.

    It holds the ASCII digits, 一 上 士, emoji and U+200B but not NBSP."""
    return "".join(chr(int(cp, 16)) for cp in _char_sets()["special_characters"])


@functools.cache
def special_character_set() -> frozenset[str]:
    return frozenset(special_characters())


@functools.cache
def various_whitespaces() -> str:
    """The 23 code points whitespace_normalization_mapper turns into spaces."""
    return "".join(chr(int(cp, 16)) for cp in _char_sets()["various_whitespaces"])


# DJ's whitespace tokenizer splits on ' ', '\n' and '\t' only.
_WORD_SEPARATORS = re.compile(r"[ \n\t]+")


def split_words(text: str) -> list[str]:
    """Words of the whitespace tokenizer: NBSP, CR, VT, FF and U+3000 do not split."""
    return [w for w in _WORD_SEPARATORS.split(text) if w]


def strip_special(word: str) -> str:
    """word.strip(special_characters()), but with set lookups: str.strip scans its
    1,618-char argument for every end character."""
    special = special_character_set()
    if word[:1] not in special and word[-1:] not in special:
        return word
    i, j = 0, len(word)
    while i < j and word[i] in special:
        i += 1
    while j > i and word[j - 1] in special:
        j -= 1
    return word[i:j]


def refine_words(
    words: Iterable[str],
    lowercase: bool = False,
    strip: bool = True,
    aug_group_sizes: Sequence[int] = (),
    aug_join_char: str = "",
) -> list[str]:
    """DJ's word refinement: lowercase, strip special characters at both ends, drop
    empties, then append the joined n-grams for each augmentation group size."""
    if lowercase:
        words = [w.lower() for w in words]
    if strip:
        words = [strip_special(w) for w in words]
    refined = [w for w in words if w]
    augmented = []
    for size in aug_group_sizes:
        augmented += [aug_join_char.join(refined[i : i + size]) for i in range(len(refined) - size + 1)]
    return refined + augmented


def strip_raw_string(pattern: Optional[str]) -> Optional[str]:
    """DJ accepts a custom pattern written as r'…' or r"…" and drops that wrapper."""
    if pattern and len(pattern) > 2 and pattern.startswith(("r'", 'r"')) and pattern[-1] == pattern[1]:
        return pattern[2:-1]
    return pattern


def require_text(op_name: str, texts: pa.ChunkedArray | pa.Array) -> None:
    """Refuse null text: DataJuicer raises on it (TypeError), so the batch must fail, not pass."""
    if texts.null_count:
        raise TypeError(f"{op_name}: {texts.null_count} row(s) have a null text; DataJuicer raises on these")


def model_required(option: str, model: str) -> ValueError:
    """The error for a DataJuicer option that needs a model this engine does not download
    (the per-option twin of catalog.MODEL_OPS)."""
    return ValueError(
        f"{option} needs {model}, which this engine does not download; "
        "remove the option (use the default) or run this op with py-data-juicer"
    )


def refuse_tokenization(model: str):
    """A pydantic field validator for DJ's `tokenization` flag: True needs `model`."""

    def check(value: bool) -> bool:
        if value:
            raise model_required("tokenization=True", model)
        return value

    return field_validator("tokenization")(check)


def text_list(op_name: str, texts: pa.ChunkedArray | pa.Array) -> list[str]:
    require_text(op_name, texts)
    return texts.to_pylist()


def as_array(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def map_rows(texts: pa.ChunkedArray, fn: Callable[[str], str], where: Optional[pa.Array] = None) -> pa.Array:
    """Apply fn to the rows flagged by `where` (all rows if None); other rows are copied untouched."""
    arr = as_array(texts)
    if where is None:
        return pa.array([fn(t) for t in arr.to_pylist()], arr.type)
    where = pc.fill_null(as_array(where), False)
    rows = pc.take(arr, pc.indices_nonzero(where)).to_pylist()
    if not rows:
        return arr
    return pc.replace_with_mask(arr, where, pa.array([fn(t) for t in rows], arr.type))


def re2_class(code_points: Iterable[int]) -> str:
    """An RE2 character class (for pyarrow.compute) of the given code points."""
    return "[" + "".join(f"\\x{{{cp:x}}}" for cp in sorted(set(code_points))) + "]"


def stat_column(table: pa.Table, key: str) -> Optional[pa.Array]:
    """An existing __dj__stats__ field, or None; DJ never recomputes a present stat."""
    if STATS_COLUMN not in table.column_names:
        return None
    stats = table.column(STATS_COLUMN).combine_chunks()
    index = stats.type.get_field_index(key)
    return None if index < 0 else stats.field(index)


class StatFilter(Filter):
    """A filter over one numeric per-row stat with DJ's closed-range keep rule."""

    stat_key: ClassVar[str] = ""
    stat_type: ClassVar[pa.DataType] = pa.float64()

    def bounds(self) -> tuple[Optional[float], Optional[float]]:
        raise NotImplementedError

    def stat_values(self, texts: pa.ChunkedArray) -> pa.Array:
        """One stat per row; the default maps `stat_of` over the Python strings."""
        return pa.array([self.stat_of(t) for t in text_list(self.op_name, texts)], self.stat_type)

    def stat_of(self, text: str) -> float:
        raise NotImplementedError

    def compute_stats(self, table: pa.Table) -> dict[str, pa.Array]:
        if stat_column(table, self.stat_key) is not None:
            return {}
        return {self.stat_key: self.stat_values(self.texts(table))}

    def keep(self, table: pa.Table, stats: dict[str, pa.Array]) -> pa.Array:
        values = stat_column(table, self.stat_key)
        lo, hi = self.bounds()
        if pa.types.is_floating(values.type):  # arrow refuses int bounds beyond 2^53 next to doubles
            lo, hi = (None if v is None else float(v) for v in (lo, hi))
        return self.in_range(values, lo, hi)
