"""ftfy 6.3.1's `fix_text`, recomposed from ftfy's own fixers so that it skips work
that provably changes nothing. The output is ftfy's, character for character
(tests/worker/ops/test_normalize.py compares it with plain ftfy).

`fix_text` fixes each line on its own (ftfy/__init__.py: fix_text). For a line,
`fix_and_explain` runs every fixer in a fixed order, and repeats until a pass
changes nothing. We run the same loop, with two short cuts:

* a fixer is skipped when the line holds none of its trigger characters, since it
  then returns the line unchanged (each fixer is a translate table, a character
  class, or a pattern that starts with one fixed character);
* `fix_encoding` is skipped when ftfy's BADNESS_RE finds no mojibake, since its
  first step returns the text unchanged then. We search BADNESS_RE only around
  non-ASCII characters, which is exact because every alternative of the pattern
  needs a non-ASCII character, a match spans at most `width` characters, and the
  pattern has no lookaround and no anchor but `^`. We verify that on the parsed
  pattern; if it does not hold (another ftfy), `shortcut()` is None and callers use
  plain ftfy."""
from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Optional

try:
    from re import _parser as sre_parse  # Python 3.11+
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore[no-redef]

import ftfy
from ftfy import chardata, fixes
from ftfy.badness import BADNESS_RE

NON_ASCII = re.compile(r"[^\x00-\x7f]+")
FORBIDDEN_OPS = {"ASSERT", "ASSERT_NOT", "GROUPREF", "GROUPREF_EXISTS", "GROUPREF_IGNORE"}
# `^` matches only at the true start of the string, also in search(text, pos, endpos);
# `$` or `\b` could wrongly match at a window's end.
START_ANCHORS = {"AT_BEGINNING", "AT_BEGINNING_STRING"}


def class_members(pattern: str) -> list[int]:
    """The code points of a pattern made of plain character classes."""
    out = []
    for op, items in sre_parse.parse(pattern):
        if str(op) != "IN":
            raise ValueError(f"not a character class: {pattern!r}")
        out += class_items(items, pattern)
    return out


def class_items(items, pattern: str) -> list[int]:
    out = []
    for kind, value in items:
        if str(kind) == "LITERAL":
            out.append(value)
        elif str(kind) == "RANGE":
            out.extend(range(value[0], value[1] + 1))
        else:
            raise ValueError(f"unexpected class item {kind} in {pattern!r}")
    return out


def fixer_triggers() -> list[tuple[str, list[int]]]:
    """fix_and_explain's fixers after fix_encoding, in ftfy's order, each with the
    code points without which it returns its input unchanged."""
    return [
        ("fix_c1_controls", class_members(chardata.C1_CONTROL_RE.pattern)),
        ("fix_latin_ligatures", sorted(chardata.LIGATURES)),
        ("fix_character_width", sorted(chardata.WIDTH_MAP)),
        ("uncurl_quotes", class_members(chardata.SINGLE_QUOTE_RE.pattern + chardata.DOUBLE_QUOTE_RE.pattern)),
        ("fix_line_breaks", [0x0D, 0x2028, 0x2029, 0x85]),  # its str.replace targets
        ("fix_surrogates", class_members(fixes.SURROGATE_RE.pattern)),
        ("remove_terminal_escapes", [0x1B] if fixes.ANSI_RE.pattern.startswith("\033") else []),
        ("remove_control_chars", sorted(chardata.CONTROL_CHARS)),
    ]


def ranges(points: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for p in sorted(set(points)):
        if out and out[-1][1] == p - 1:
            out[-1] = (out[-1][0], p)
        else:
            out.append((p, p))
    return out


def python_class(points: list[int]) -> re.Pattern:
    spans = (re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges(points))
    return re.compile("[" + "".join(spans) + "]")


def re2_class(points: list[int]) -> str:
    """An RE2 class for pyarrow; surrogates are left out, as Arrow's UTF-8 cannot hold them."""
    spans = [(a, b) for a, b in ranges(points) if not (0xD800 <= a and b <= 0xDFFF)]
    return "[" + "".join(f"\\x{{{a:x}}}" + (f"-\\x{{{b:x}}}" if b > a else "") for a, b in spans) + "]"


def needs_non_ascii(item) -> bool:
    """A mandatory single-character item whose every member is non-ASCII."""
    op, value = item
    if str(op) == "LITERAL":
        return value > 0x7F
    if str(op) == "IN":
        return all((str(k) == "LITERAL" and v > 0x7F) or (str(k) == "RANGE" and v[0] > 0x7F) for k, v in value)
    return False


def looks_outside(subpattern) -> bool:
    """Whether a parsed pattern holds a construct that depends on text outside its match."""
    for op, value in subpattern:
        if str(op) in FORBIDDEN_OPS or (str(op) == "AT" and str(value) not in START_ANCHORS):
            return True
        for part in value if isinstance(value, (list, tuple)) else ():
            parts = part if isinstance(part, list) else [part]
            if any(isinstance(p, sre_parse.SubPattern) and looks_outside(p) for p in parts):
                return True
    return False


def local_badness_width(pattern: re.Pattern) -> Optional[int]:
    """The longest match of `pattern` if every match needs a non-ASCII character and
    nothing outside the match matters; otherwise None."""
    if pattern.flags & re.IGNORECASE:  # a non-ASCII letter could then match an ASCII one (K, ſ)
        return None
    parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    items = list(parsed)
    if len(items) != 1 or str(items[0][0]) != "BRANCH":
        return None
    for alternative in items[0][1][1]:
        if looks_outside(alternative) or not any(needs_non_ascii(item) for item in alternative):
            return None
    return parsed.getwidth()[1]


@dataclass(frozen=True)
class FastFtfy:
    width: int
    fixers: tuple[tuple[str, Callable[[str], str], re.Pattern], ...]
    triggers: str  # RE2 class of every fixer trigger plus '&': ASCII rows without one are untouched

    def is_bad(self, text: str) -> bool:
        """ftfy.badness.is_bad(text), searching only windows around non-ASCII runs."""
        reach = self.width - 1
        lo = hi = -1
        for run in NON_ASCII.finditer(text):
            start = max(run.start() - reach, 0)
            if start > hi:
                if hi > lo and BADNESS_RE.search(text, lo, hi):
                    return True
                lo = start
            hi = run.end() + reach
        return hi > lo and BADNESS_RE.search(text, lo, hi) is not None

    def fix_text(self, text: str, config: ftfy.TextFixerConfig) -> str:
        """ftfy.fix_text(text, config): the same line split and '<' rule."""
        out, pos = [], 0
        while pos < len(text):
            end = text.find("\n", pos) + 1 or len(text)
            end = min(end, pos + config.max_decode_length)
            segment = text[pos:end]
            if config.unescape_html == "auto" and "<" in segment:
                config = config._replace(unescape_html=False)  # for this and every later line, as in ftfy
            out.append(self.fix_segment(segment, config))
            pos = end
        return "".join(out)

    def fix_segment(self, text: str, config: ftfy.TextFixerConfig) -> str:
        """ftfy.fix_and_explain(text, config).text without the explanation."""
        while True:
            before = text
            if config.unescape_html and "&" in text:
                text = fixes.unescape_html(text)
            if config.fix_encoding and self.is_bad(text):
                text = ftfy.fix_encoding(text)  # ftfy passes no config here either
            for name, fixer, trigger in self.fixers:
                if getattr(config, name) and trigger.search(text):
                    text = fixer(text)
            if config.normalization is not None:
                text = unicodedata.normalize(config.normalization, text)
            if text == before:
                return text


@functools.cache
def shortcut() -> Optional[FastFtfy]:
    """The fast ftfy, or None when ftfy's internals are not what the proof needs."""
    try:
        width = local_badness_width(BADNESS_RE)
        triggers = fixer_triggers()
        fixers = tuple((name, ftfy.FIXERS[name], python_class(points)) for name, points in triggers)
    except (AttributeError, KeyError, ValueError, TypeError):
        return None
    if width is None or any(not points for _, points in triggers):
        return None
    every = [ord("&")] + [p for _, points in triggers for p in points]
    return FastFtfy(width=width, fixers=fixers, triggers=re2_class(every))
