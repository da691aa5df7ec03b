"""Content mappers: LaTeX macro expansion, words with bad substrings, regex replacement.

Each reproduces DataJuicer 1.6.1's op of the same name, quirks included."""
from __future__ import annotations

import functools
from typing import ClassVar, Optional, Union

import pyarrow as pa
import pyarrow.compute as pc
import regex
from pydantic import field_validator, model_validator

from .base import Mapper, register
from .remove import TextMapper
from .text_utils import map_rows, refuse_tokenization, require_text, strip_raw_string, strip_special


def _unicode_escaped(value: str) -> str:
    """DJ turns a macro's name and value into 'unicode-escape' text before using them as a
    regex pattern and template: backslashes double, non-ASCII becomes \\uXXXX escapes."""
    return value.encode("unicode-escape").decode("utf-8")


@functools.cache
def _macro_use(escaped_name: str) -> regex.Pattern:
    """A use of the macro: its name followed by one non-alphanumeric character (a use at
    the very end of the text has none, so it stays unexpanded, as in DJ)."""
    return regex.compile("(" + escaped_name + ")([^a-zA-Z0-9])")


@register("expand_macro_mapper")
class ExpandMacroMapper(TextMapper):
    """Inlines argument-free LaTeX macros defined in the same text.

    A definition is `\\newcommand{\\name}{value}`, `\\newcommand*{...}{...}` or
    `\\def\\name{value}` that ends its line (a CRLF line does not: `$` is before `\\n`
    only). Each use of `\\name` followed by a non-alphanumeric character becomes `value`,
    including the use inside the definition itself, so `\\newcommand{\\a}{b}` turns into
    `\\newcommand{b}{b}`. `\\newcommand` definitions are expanded before `\\def` ones; a
    name defined twice keeps its first place in that order and its last value."""

    definitions: ClassVar[tuple[regex.Pattern, ...]] = (
        regex.compile(r"\\\bnewcommand\b\*?\{(\\[a-zA-Z0-9]+?)\}\{(.*?)\}$", regex.MULTILINE),
        regex.compile(r"\\def\s*(\\[a-zA-Z0-9]+?)\s*\{(.*?)\}$", regex.MULTILINE),
    )

    def macros(self, text: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for definition in self.definitions:
            for match in definition.finditer(text):
                found[_unicode_escaped(match.group(1))] = _unicode_escaped(match.group(2))
        return found

    def map_text(self, text: str) -> str:
        for name, value in self.macros(text).items():
            # The value is a regex template, so its (escaped) backslashes are template escapes.
            text = _macro_use(name).sub(value + r"\2", text)
        return text

    def map_column(self, texts: pa.ChunkedArray) -> pa.Array:
        require_text(self.op_name, texts)
        # Without "\newcommand" or "\def" no definition can match, so nothing changes.
        where = pc.or_(pc.match_substring(texts, "\\newcommand"), pc.match_substring(texts, "\\def"))
        return map_rows(texts, self.map_text, where)


DEFAULT_INCORRECT_SUBSTRINGS = ("http", "www", ".com", "href", "//")


@register("remove_words_with_incorrect_substrings_mapper")
class RemoveWordsWithIncorrectSubstringsMapper(TextMapper):
    """Drops every word that, with DJ's special characters stripped from its ends, contains
    one of `substrings` (None: http, www, .com, href, //).

    Words are split on newline, then tab, then single spaces, and the text is rebuilt even
    when no word goes: runs of spaces collapse to one, and lines or tab cells left without
    words vanish with their separators. An empty string in `substrings` drops every word."""

    lang: str = "en"
    tokenization: bool = False
    substrings: Optional[list[str]] = None

    _no_model = refuse_tokenization("a SentencePiece model (<lang>.sp.model from DataJuicer's model hub)")

    def bad_substrings(self) -> tuple[str, ...]:
        return DEFAULT_INCORRECT_SUBSTRINGS if self.substrings is None else tuple(self.substrings)

    def map_text(self, text: str) -> str:
        bad = self.bad_substrings()
        lines = []
        for line in text.split("\n"):
            cells = []
            for cell in line.split("\t"):
                words = [w for w in cell.split(" ") if w and not any(s in strip_special(w) for s in bad)]
                if words:
                    cells.append(" ".join(words))
            if cells:
                lines.append("\t".join(cells))
        return "\n".join(lines)


@functools.cache
def _dotall(pattern: str) -> regex.Pattern:
    return regex.compile(pattern, regex.DOTALL)


@register("replace_content_mapper")
class ReplaceContentMapper(TextMapper):
    """Replaces every match of each DOTALL `pattern` by its `repl`, patterns in order.

    `pattern` is one regex or a list (None: the text is left alone); a pattern written as
    r'…' or r"…" loses that wrapper. `repl` is one template for every pattern, or a list
    paired with the patterns by position (extra entries are ignored). DJ raises on the
    first sample when the list is shorter than the patterns; here the recipe is refused."""

    pattern: Union[str, list[str], None] = None
    repl: Union[str, list[str]] = ""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: Union[str, list[str], None]) -> Union[str, list[str], None]:
        for p in [value] if isinstance(value, str) else value or []:
            try:
                _dotall(strip_raw_string(p))
            except regex.error as err:
                raise ValueError(f"{p!r} is not a valid regex: {err}") from None
        return value

    @model_validator(mode="after")
    def _one_repl_per_pattern(self):
        if isinstance(self.repl, list) and self.pattern is not None and len(self.patterns()) > len(self.repl):
            raise ValueError(
                f"repl has {len(self.repl)} entries for {len(self.patterns())} patterns; "
                "give one repl per pattern, or one repl string for all of them"
            )
        return self

    def patterns(self) -> list[str]:
        return [self.pattern] if isinstance(self.pattern, str) else list(self.pattern or [])

    def replacements(self) -> list[tuple[regex.Pattern, str]]:
        repls = self.repl if isinstance(self.repl, list) else [self.repl] * len(self.patterns())
        return [(_dotall(strip_raw_string(p)), r) for p, r in zip(self.patterns(), repls)]

    def warm_up(self) -> None:
        self.replacements()

    def map_text(self, text: str) -> str:
        for pattern, repl in self.replacements():
            text = pattern.sub(repl, text)
        return text

    def map_column(self, texts: pa.ChunkedArray) -> pa.Array:
        if not self.patterns():
            return texts.combine_chunks()  # DJ calls no regex, so even a null text passes
        require_text(self.op_name, texts)
        return map_rows(texts, self.map_text)
