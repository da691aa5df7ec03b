"""Cleaning mappers: links, emails, HTML, IP addresses, copyright headers."""
from __future__ import annotations

import functools
from typing import ClassVar, Optional

import pyarrow as pa
import pyarrow.compute as pc
import regex
from pydantic import field_validator, model_validator

from .base import Mapper, register
from .text_utils import map_rows, require_text, strip_raw_string


@functools.cache
def compiled(pattern: str) -> regex.Pattern:
    """DJ substitutes every pattern with DOTALL."""
    return regex.compile(pattern, regex.DOTALL)


class PatternMapper(Mapper):
    """Replaces every match of a DOTALL regex by `repl`; `pattern=None` selects the built-in one."""

    pattern: Optional[str] = None
    repl: str = ""

    default_pattern: ClassVar[str] = ""
    # An RE2 pattern that every match of the default pattern contains: rows where it
    # finds nothing cannot match and skip the (much slower) `regex` substitution.
    prefilter: ClassVar[Optional[str]] = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            try:
                compiled(strip_raw_string(value))  # a bad pattern fails the recipe, not a partition
            except regex.error as err:
                raise ValueError(f"not a valid regex: {err}") from None
        return value

    def compiled(self) -> regex.Pattern:
        return compiled(strip_raw_string(self.pattern) if self.pattern is not None else self.default_pattern)

    def map_text(self, text: str) -> str:
        return self.compiled().sub(self.repl, text)

    def warm_up(self) -> None:
        self.compiled()

    def map_column(self, texts: pa.ChunkedArray) -> pa.Array:
        require_text(self.op_name, texts)  # DJ's regex.sub raises TypeError on None
        where = None
        if self.pattern is None and self.prefilter:
            where = pc.match_substring_regex(texts, self.prefilter)
        return map_rows(texts, self.map_text, where)


@register("clean_links_mapper")
class CleanLinksMapper(PatternMapper):
    """Removes URLs, and also `word:value` tokens and hex IPv6."""

    # Gruber's liberal URL pattern: a scheme-like, www or domain/ prefix, then a body
    # that must end in a parenthesised group or a non-punctuation character.
    default_pattern: ClassVar[str] = (
        r"(?i)\b("
        r"(?:[a-z][\w-]+:(?:/{1,3}|[a-z0-9%])|www\d{0,3}[.]|[a-z0-9.\-]+[.][a-z]{2,4}/)"
        r"(?:[^\s()<>]+|\(([^\s()<>]+|(\([^\s()<>]+\)))*\))+"
        r"(?:\(([^\s()<>]+|(\([^\s()<>]+\)))*\)|[^\s`!()\[\]{};:'\".,<>?«»“”‘’])"
        r")"
    )
    # Prefix 1 needs ':', prefix 3 needs '/', prefix 2 needs 'www' in any case.
    prefilter: ClassVar[Optional[str]] = r"[:/]|(?i:www)"


@register("clean_email_mapper")
class CleanEmailMapper(PatternMapper):
    """Removes emails; the domain must be lowercase ASCII, so USER@DOMAIN.COM survives."""

    default_pattern: ClassVar[str] = r"[A-Za-z0-9.\-+_]+@[a-z0-9.\-+_]+\.[a-z]+"
    prefilter: ClassVar[Optional[str]] = "@"


@register("clean_ip_mapper")
class CleanIpMapper(PatternMapper):
    """Removes IPv4 and full 8-group IPv6 addresses, with no word boundaries."""

    default_pattern: ClassVar[str] = (
        r"(?:(?:1[0-9][0-9]\.)|(?:2[0-4][0-9]\.)|(?:25[0-5]\.)|(?:[1-9][0-9]\.)|(?:[0-9]\.)){3}"
        r"(?:(?:1[0-9][0-9])|(?:2[0-4][0-9])|(?:25[0-5])|(?:[1-9][0-9])|(?:[0-9]))"
        r"|([\da-fA-F]{1,4}:){7}[\da-fA-F]{1,4}"
    )
    # IPv4 holds ASCII digit, '.', ASCII digit; IPv6 needs ':' (its \d also takes non-ASCII digits).
    prefilter: ClassVar[Optional[str]] = r"[0-9]\.[0-9]|:"


@functools.cache
def parser():
    """selectolax's Lexbor HTML5 parser, the one DJ 1.6.1 uses (imported lazily: only this op needs it)."""
    try:
        from selectolax.lexbor import LexborHTMLParser
    except ImportError:
        raise ValueError("clean_html_mapper needs selectolax 1.0.2 (pip install selectolax==1.0.2)") from None
    return LexborHTMLParser


@register("clean_html_mapper")
class CleanHtmlMapper(Mapper):
    """Text content of the HTML5 parse, nodes joined with no separator."""

    @model_validator(mode="after")
    def _parser_installed(self):
        parser()  # fail when the recipe is built, not in the middle of a run
        return self

    def map_text(self, text: str) -> str:
        # DJ turns list items into '*' bullets before parsing; exact and case-sensitive.
        text = text.replace("<li>", "\n*").replace("</li>", "").replace("<ol>", "\n*").replace("</ol>", "")
        return parser()(text).text()

    # The HTML5 parser changes text only at '<', '&', NUL and CR, and drops leading
    # whitespace; rows with none of these come out as they went in.
    parsed: ClassVar[str] = r"[<&\x00\r]|^[\t\n\x0c ]"

    def map_column(self, texts: pa.ChunkedArray) -> pa.Array:
        # DJ returns a non-string sample unchanged (with a warning) instead of raising.
        return map_rows(texts, self.map_text, pc.match_substring_regex(texts, self.parsed))


@register("clean_copyright_mapper")
class CleanCopyrightMapper(Mapper):
    """Cuts the first block comment if it mentions copyright; with no block comment,
    drops leading `//`, `#`, `--` and empty lines."""

    block_comment: ClassVar[regex.Pattern] = regex.compile(r"/\*[^*]*\*+(?:[^/*][^*]*\*+)*/")
    line_markers: ClassVar[tuple[str, ...]] = ("//", "#", "--")

    def map_text(self, text: str) -> str:
        found = self.block_comment.search(text)
        if found:
            if "copyright" in found.group().lower():
                return text[: found.start()] + text[found.end() :]
            return text  # only the first comment is examined
        lines = text.split("\n")
        skip = 0
        while skip < len(lines) and (not lines[skip] or lines[skip].startswith(self.line_markers)):
            skip += 1
        return "\n".join(lines[skip:]) if skip else text

    def map_column(self, texts: pa.ChunkedArray) -> pa.Array:
        require_text(self.op_name, texts)
        return map_rows(texts, self.map_text)
