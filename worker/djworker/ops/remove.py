"""Removing mappers: long words, repeated sentences, chars, tables, LaTeX header,
comments and bibliography."""
from __future__ import annotations

import functools
import sys
from typing import Callable, ClassVar, Optional, Union

import pyarrow as pa
import pyarrow.compute as pc
import regex
from pydantic import field_validator

from .base import Mapper, register
from .text_utils import map_rows, re2_class, require_text, strip_special


class TextMapper(Mapper):
    """A mapper that raises on null text, as DJ's str methods and regexes do."""

    def map_column(self, texts: pa.ChunkedArray) -> pa.Array:
        require_text(self.op_name, texts)
        return map_rows(texts, self.map_text)


@register("remove_long_words_mapper")
class RemoveLongWordsMapper(TextMapper):
    """Drops words outside min_len..max_len; it rebuilds the whitespace even when no
    word goes: spaces collapse, blank lines and empty tab cells vanish."""

    min_len: int = 1
    max_len: int = sys.maxsize

    def keeps(self, word: str) -> bool:
        if self.min_len <= len(word) <= self.max_len:
            return True
        # A too-long word gets a second chance with its special characters stripped,
        # and is then kept unstripped; a too-short one gets none.
        return len(word) > self.max_len and self.min_len <= len(strip_special(word)) <= self.max_len

    def map_text(self, text: str) -> str:
        lines = []
        for line in text.split("\n"):
            cells = []
            for cell in line.split("\t"):
                words = " ".join(w for w in cell.split(" ") if w and self.keeps(w))
                if words:
                    cells.append(words)
            if cells:
                lines.append("\t".join(cells))
        return "\n".join(lines)


@functools.cache
def eval_tokenizer(source: str) -> Callable[[str], list[str]]:
    """DJ accepts the sentence tokenizer as the text of a one-argument lambda (for YAML)."""
    return eval(source, {"__builtins__": __builtins__})  # noqa: S307  (DJ does the same)


@register("remove_repeat_sentences_mapper")
class RemoveRepeatSentencesMapper(TextMapper):
    """Drops a sentence whose key was seen earlier in the document.

    The key keeps only ASCII letters/digits, CJK U+4E00-9FA5, tab, LF and space, so
    Cyrillic or Greek sentences with equal word counts collide, as in DJ."""

    lowercase: bool = False
    ignore_special_character: bool = True
    min_repeat_sentence_length: int = 2
    tokenizer: Optional[str] = None

    # DJ's splitter inserts '\n' after each terminator; the `[…]` class of the last rule
    # holds `{ } 2 6` by accident ('.{6}' written inside a class) and we keep that.
    splitters: ClassVar[tuple[tuple[regex.Pattern, str], ...]] = tuple(
        (regex.compile(p), r"\1\n\2")
        for p in (
            r"([.。！!？\?])([^’”])",
            r"(\.{6})([^’”])",
            r"(\…{2})([^’”])",
            r"([.。!！？\?\.{6}\…{2}][’”])([^’”])",
        )
    )
    special: ClassVar[regex.Pattern] = regex.compile(r"[^a-zA-Z0-9\u4e00-\u9fa5\n\t ]")

    @field_validator("tokenizer")
    @classmethod
    def _lambda_only(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.strip().startswith("lambda"):
            raise ValueError("tokenizer must be the text of a one-argument lambda, e.g. \"lambda s: s.split('|')\"")
        return value

    def sentences(self, line: str) -> list[str]:
        if self.tokenizer is not None:
            pieces = eval_tokenizer(self.tokenizer)(line)
            # DJ re-inserts the separator a custom tokenizer took away as one space.
            return [p if i == 0 or p[:1].isspace() else " " + p for i, p in enumerate(pieces)]
        for pattern, repl in self.splitters:
            line = pattern.sub(repl, line)
        return line.split("\n")

    def map_text(self, text: str) -> str:
        seen: set[str] = set()
        lines = []
        for line in text.split("\n"):
            kept = ""
            if line:
                for sentence in self.sentences(line):
                    key = sentence.strip()
                    if self.lowercase:
                        key = key.lower()
                    if self.ignore_special_character:
                        key = self.special.sub("", key)
                    if len(key) < self.min_repeat_sentence_length:
                        kept += sentence  # too short to ever count as a repeat
                    elif key not in seen:
                        seen.add(key)
                        kept += sentence
            lines.append(kept)
        return "\n".join(lines)


@register("remove_specific_chars_mapper")
class RemoveSpecificCharsMapper(TextMapper):
    """Deletes every listed character; a multi-char list element removes each of its
    chars, since DJ puts all of them into one character class."""

    chars_to_remove: Union[str, list[str]] = "◆●■►▼▲▴∆▻▷❖♡□"

    def table(self) -> dict[int, None]:
        return dict.fromkeys(map(ord, "".join(self.chars_to_remove)))

    def map_column(self, texts: pa.ChunkedArray) -> pa.Array:
        require_text(self.op_name, texts)
        table = self.table()
        if not table:
            return texts
        return map_rows(texts, lambda t: t.translate(table), pc.match_substring_regex(texts, re2_class(table)))

    def map_text(self, text: str) -> str:
        return text.translate(self.table())


@functools.cache
def table_row_pattern(separators: int) -> regex.Pattern:
    """Two or more consecutive lines of separators+1 tokens, each line right after a '\\n'."""
    return regex.compile(r"(?<=\n)((\S+?)([ |\t](\S+?)){%d}\n+){2,}" % separators)


@register("remove_table_text_mapper")
class RemoveTableTextMapper(TextMapper):
    """Deletes runs of >= 2 lines with equal token counts, one pass per column count;
    prose with equal word counts goes too."""

    min_col: int = 2
    max_col: int = 20

    def map_text(self, text: str) -> str:
        for columns in range(self.min_col, self.max_col + 1):
            text = table_row_pattern(columns - 1).sub("", text)
        return text

    def map_column(self, texts: pa.ChunkedArray) -> pa.Array:
        require_text(self.op_name, texts)
        # Two rows need a '\n' before the first and one after each: fewer than 3 cannot match.
        return map_rows(texts, self.map_text, pc.greater_equal(pc.count_substring(texts, "\n"), 3))


@register("remove_header_mapper")
class RemoveHeaderMapper(TextMapper):
    """Drops everything before the first LaTeX sectioning command (kept itself); text
    without one becomes '' unless drop_no_head=False."""

    drop_no_head: bool = True

    header: ClassVar[regex.Pattern] = regex.compile(
        r"^(.*?)("
        + "|".join(
            r"\\\b%s\b\*?(?:\[(.*?)\])?\{(.*?)\}" % name
            for name in ("chapter", "part", "section", "subsection", "subsubsection", "paragraph", "subparagraph")
        )
        + ")",
        regex.DOTALL,
    )

    def map_text(self, text: str) -> str:
        found = self.header.search(text)
        if not found:
            return "" if self.drop_no_head else text
        return text[found.start(2) :]


@register("remove_comments_mapper")
class RemoveCommentsMapper(TextMapper):
    """Removes LaTeX comments: any unescaped '%' to the end of its line (with the
    character before it), then whole '%' lines. doc_type is ignored, as in DJ."""

    doc_type: Union[str, list[str]] = "tex"
    inline: bool = True
    multiline: bool = True

    inline_comment: ClassVar[regex.Pattern] = regex.compile(r"[^\\]%.+$", regex.MULTILINE)
    comment_line: ClassVar[regex.Pattern] = regex.compile(r"^%.*\n?", regex.MULTILINE)

    def map_text(self, text: str) -> str:
        if self.inline:
            text = self.inline_comment.sub("", text)
        if self.multiline:
            text = self.comment_line.sub("", text)
        return text


@register("remove_bibliography_mapper")
class RemoveBibliographyMapper(TextMapper):
    """Cuts the text from the first \\appendix, references/thebibliography environment
    or \\bibliography{…} to the end."""

    tail: ClassVar[regex.Pattern] = regex.compile(
        r"(\\appendix|\\begin\{references\}|\\begin\{REFERENCES\}|\\begin\{thebibliography\}|\\bibliography\{.*\}).*$",
        regex.DOTALL,
    )

    def map_text(self, text: str) -> str:
        return self.tail.sub("", text)
