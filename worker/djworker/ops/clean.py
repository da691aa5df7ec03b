"""Cleaning mappers: links, emails, HTML, IP addresses, copyright headers."""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator, Optional

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


@dataclass(frozen=True)
class LocalSub:
    """`pattern.sub(repl, text)`, scanning only windows of the text.

    Valid for a pattern none of whose matches holds a `boundary` character, each of
    which holds a `trigger` match, and whose only assertion is a `\\b` at its start
    where a boundary character counts as a non-word character. A window is the
    maximal run of non-boundary characters around a trigger. A match lies inside
    one window (it holds a trigger and no boundary), a scan from the window's start
    finds the same matches as a full scan (none is in progress across a boundary
    character, and `\\b` at the window's start sees the boundary character before
    it, which `regex` looks at also with `pos`), and `endpos` at a boundary character
    hides nothing a match could use. So the substitution equals the full one."""

    pattern: regex.Pattern
    trigger: re.Pattern
    forward: regex.Pattern  # the next boundary character
    backward: regex.Pattern  # the previous one (a reverse search)

    def windows(self, text: str) -> Iterator[tuple[int, int]]:
        hi = -1
        for hit in self.trigger.finditer(text):
            at = hit.start()
            if at < hi:
                continue  # inside the last window
            before = self.backward.search(text, 0, at)
            after = self.forward.search(text, at)
            lo = before.end() if before else 0
            hi = after.start() if after else len(text)
            yield lo, hi

    def sub(self, repl: str, text: str) -> str:
        pieces, last = [], 0
        for lo, hi in self.windows(text):
            for match in self.pattern.finditer(text, lo, hi):
                pieces += [text[last : match.start()], repl]
                last = match.end()
        if not pieces:
            return text
        pieces.append(text[last:])
        return "".join(pieces)


@functools.cache
def local_sub(pattern: str, trigger: str, boundary: str) -> LocalSub:
    return LocalSub(compiled(pattern), re.compile(trigger), regex.compile(boundary), regex.compile("(?r)" + boundary))


class PatternMapper(Mapper):
    """Replaces every match of a DOTALL regex by `repl`; `pattern=None` selects the built-in one."""

    pattern: Optional[str] = None
    repl: str = ""

    default_pattern: ClassVar[str] = ""
    # An RE2 pattern that every match of the default pattern contains: rows where it
    # finds nothing cannot match and skip the (much slower) `regex` substitution.
    prefilter: ClassVar[Optional[str]] = None
    # For LocalSub: a `re` pattern every match of the default pattern contains, and
    # a `regex` class of the characters no match consumes (see LocalSub for why the
    # windowed substitution is the full one).
    trigger: ClassVar[Optional[str]] = None
    boundary: ClassVar[Optional[str]] = None

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

    def fast_map_text(self) -> Callable[[str], str]:
        """map_text, or the equal windowed substitution for the default pattern (a
        `repl` with a backslash is a template: that case keeps the plain one)."""
        if self.pattern is not None or self.trigger is None or self.boundary is None or "\\" in self.repl:
            return self.map_text
        local, repl = local_sub(self.default_pattern, self.trigger, self.boundary), self.repl
        return lambda text: local.sub(repl, text)

    def warm_up(self) -> None:
        self.compiled()
        self.fast_map_text()

    def map_column(self, texts: pa.ChunkedArray) -> pa.Array:
        require_text(self.op_name, texts)  # DJ's regex.sub raises TypeError on None
        where = None
        if self.pattern is None and self.prefilter:
            where = pc.match_substring_regex(texts, self.prefilter)
        return map_rows(texts, self.fast_map_text(), where)


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
    trigger: ClassVar[Optional[str]] = r"[:/]|(?i:www)"
    # Every item of the pattern is a letter, digit, '_', '-', '%', ':', '/', '.', a
    # parenthesis or a `[^\s...]` class: never whitespace (`regex`'s \s, which is
    # also never a word character, so the leading \b sees a non-word character
    # before a window; tests/worker/ops/test_fast_paths.py checks both over Unicode).
    boundary: ClassVar[Optional[str]] = r"\s"


@register("clean_email_mapper")
class CleanEmailMapper(PatternMapper):
    """Removes emails; the domain must be lowercase ASCII, so USER@DOMAIN.COM survives."""

    default_pattern: ClassVar[str] = r"[A-Za-z0-9.\-+_]+@[a-z0-9.\-+_]+\.[a-z]+"
    prefilter: ClassVar[Optional[str]] = "@"
    trigger: ClassVar[Optional[str]] = "@"
    boundary: ClassVar[Optional[str]] = r"[^A-Za-z0-9.\-+_@]"  # a match consumes only these ASCII characters


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
