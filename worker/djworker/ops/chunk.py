"""text_chunk_mapper: one sample in, one sample per chunk out.

It is the one text op that changes the row count (a Mapper may: see Mapper.process).
Each chunk row copies every other column of its sample, in sample order, so the output
depends only on the input rows and a checkpoint after it holds the chunked rows."""
from __future__ import annotations

import functools
import re
from typing import Optional

import pyarrow as pa
from pydantic import NonNegativeInt, PositiveInt, field_validator, model_validator

from .base import Mapper, register
from .text_utils import model_required, text_list


@functools.cache
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)  # DJ uses the standard `re` here, not `regex`


@register("text_chunk_mapper")
class TextChunkMapper(Mapper):
    """Splits each text into chunks, DataJuicer 1.6.1's way.

    - `split_pattern` only: `re.split` on it (captured groups become pieces too), keeping
      the pieces that are not blank. A blank text gives no chunk, so its row disappears.
    - `max_len` only: windows of `max_len` code points starting every
      `max_len - overlap_len`; a text no longer than `max_len` stays whole (even empty).
    - both: while the rest is longer than `max_len`, cut its first `max_len` code points
      at the start of the last match of `split_pattern` there and resume after that match;
      with no match there, cut at `max_len` and resume `overlap_len` earlier. Blank cuts
      are dropped; the final rest is kept as is, blank or not.

    Lengths are code points (a CRLF counts 2). DJ recurses once per chunk and so fails past
    about 1,000 chunks of one text; here any number works. A pattern whose last match in
    the window is empty at its start would loop forever (DJ: RecursionError); it raises."""

    max_len: Optional[PositiveInt] = None
    split_pattern: Optional[str] = r"\n\n"
    overlap_len: NonNegativeInt = 0
    tokenizer: Optional[str] = None
    trust_remote_code: bool = False

    @field_validator("split_pattern")
    @classmethod
    def _compiles(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            try:
                _compiled(value)
            except re.error as err:
                raise ValueError(f"not a valid regex: {err}") from None
        return value

    @field_validator("tokenizer")
    @classmethod
    def _no_tokenizer(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            raise model_required(f"tokenizer={value!r}", "a Hugging Face tokenizer")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if self.max_len is None and self.split_pattern is None:
            raise ValueError("max_len and split_pattern cannot both be None: set at least one")
        if self.max_len is not None and self.overlap_len >= self.max_len:
            raise ValueError(f"overlap_len ({self.overlap_len}) must be less than max_len ({self.max_len})")
        return self

    def chunks(self, text: str) -> list[str]:
        if self.max_len is None:
            return [piece for piece in _compiled(self.split_pattern).split(text) if piece is not None and piece.strip()]
        if self.split_pattern is None:
            if len(text) <= self.max_len:
                return [text]
            step = self.max_len - self.overlap_len
            return [text[start : start + self.max_len] for start in range(0, len(text), step)]
        return self.cut_at_pattern(text)

    def cut_at_pattern(self, text: str) -> list[str]:
        pattern, size = _compiled(self.split_pattern), self.max_len
        out = []
        while len(text) > size:
            window = text[:size]
            last = None
            for last in pattern.finditer(window):
                pass
            if last is None:
                cut, rest = window, text[size - self.overlap_len :]
            elif last.end() == 0:
                raise ValueError(
                    f"{self.op_name}: split_pattern {self.split_pattern!r} only matches empty at the start of "
                    f"{window[:40]!r}…, so the text can never be cut; use a pattern that consumes characters"
                )
            else:
                cut, rest = window[: last.start()], text[last.end() :]
            if cut.strip():
                out.append(cut)
            text = rest
        out.append(text)
        return out

    def warm_up(self) -> None:
        if self.split_pattern is not None:
            _compiled(self.split_pattern)

    def process(self, table: pa.Table) -> pa.Table:
        texts = text_list(self.op_name, self.texts(table))
        pieces = [self.chunks(t) for t in texts]
        repeat = [row for row, chunks in enumerate(pieces) for _ in chunks]
        out = table.take(pa.array(repeat, pa.int64()))
        column = pa.array([c for chunks in pieces for c in chunks], pa.string())
        return out.set_column(out.column_names.index(self.text_key), self.text_key, column)
