"""Decides, without running it, that ftfy 6.3.1's `fix_text` leaves a row unchanged.

fix_text returns its input when, in the first pass over every line, each fixer
changes nothing (ftfy/__init__.py: fix_text, fix_and_explain). A fixer can only act on a row that holds one of its trigger
characters, except two: `fix_encoding`, which acts only when ftfy's BADNESS_RE
finds mojibake, and the final normalisation. So a row is untouched when it has no
trigger character, is already normalised, and BADNESS_RE finds nothing in it.

BADNESS_RE is searched only around non-ASCII characters: we check, on ftfy's own
parsed pattern, that every alternative needs a non-ASCII character, that a match
is at most `width` characters long, and that the pattern has no lookarounds and no
anchor but `^`. If any of this does not hold (another ftfy), `shortcut()` is None and
every row that is not plain ASCII goes through ftfy."""
from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Optional

try:
    from re import _parser as sre_parse  # Python 3.11+
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore[no-redef]

from ftfy import chardata
from ftfy.badness import BADNESS_RE

NON_ASCII = re.compile(r"[^\x00-\x7f]+")
FORBIDDEN_OPS = {"ASSERT", "ASSERT_NOT", "GROUPREF", "GROUPREF_EXISTS", "GROUPREF_IGNORE"}
# `^` matches only at the true start of the string, also in search(text, pos, endpos);
# `$` or `\b` would wrongly match at a window's end.
START_ANCHORS = {"AT_BEGINNING", "AT_BEGINNING_STRING"}


def trigger_code_points() -> list[int]:
    """Every code point that some ftfy fixer other than fix_encoding acts on."""
    points = {ord("&"), 0x1B, ord("\r"), 0x2028, 0x2029, 0x85}  # unescape_html, terminal escapes, line breaks
    points |= set(range(0x80, 0xA0))  # fix_c1_controls
    points |= set(chardata.LIGATURES) | set(chardata.WIDTH_MAP) | set(chardata.CONTROL_CHARS)
    points |= {ord(c) for c in "\u02bc\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f"}  # uncurl_quotes
    for pattern in (chardata.SINGLE_QUOTE_RE, chardata.DOUBLE_QUOTE_RE, chardata.C1_CONTROL_RE):
        points |= set(class_members(pattern.pattern))
    return sorted(points)


def class_members(pattern: str) -> list[int]:
    """The code points of a pattern that is one plain character class."""
    [(op, items)] = sre_parse.parse(pattern)
    assert str(op) == "IN", pattern
    out = []
    for kind, value in items:
        if str(kind) == "LITERAL":
            out.append(value)
        elif str(kind) == "RANGE":
            out.extend(range(value[0], value[1] + 1))
        else:
            raise ValueError(f"unexpected class item {kind} in {pattern!r}")
    return out


def ranges(points: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for p in points:
        if out and out[-1][1] == p - 1:
            out[-1] = (out[-1][0], p)
        else:
            out.append((p, p))
    return out


def needs_non_ascii(item) -> bool:
    """A mandatory single-character item whose every member is non-ASCII."""
    op, value = item
    if str(op) == "LITERAL":
        return value > 0x7F
    if str(op) == "IN":
        return all(
            (str(k) == "LITERAL" and v > 0x7F) or (str(k) == "RANGE" and v[0] > 0x7F) for k, v in value
        )
    return False


def uses_forbidden(subpattern) -> bool:
    for op, value in subpattern:
        if str(op) in FORBIDDEN_OPS or (str(op) == "AT" and str(value) not in START_ANCHORS):
            return True
        for part in value if isinstance(value, (list, tuple)) else ():
            if isinstance(part, sre_parse.SubPattern) and uses_forbidden(part):
                return True
            if isinstance(part, list) and any(isinstance(p, sre_parse.SubPattern) and uses_forbidden(p) for p in part):
                return True
    return False


def badness_is_local(pattern: re.Pattern) -> Optional[int]:
    """The maximum match width if every match of `pattern` needs a non-ASCII char
    and no construct looks outside the match; else None."""
    if pattern.flags & re.IGNORECASE:  # a non-ASCII letter could then match an ASCII one (K, ſ)
        return None
    parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    items = list(parsed)
    if len(items) != 1 or str(items[0][0]) != "BRANCH":
        return None
    alternatives = items[0][1][1]
    for alternative in alternatives:
        if uses_forbidden(alternative) or not any(needs_non_ascii(item) for item in alternative):
            return None
    return parsed.getwidth()[1]


@dataclass(frozen=True)
class Shortcut:
    triggers: str  # an RE2 character class, for pyarrow.compute
    trigger_re: re.Pattern
    width: int

    def is_bad(self, text: str) -> bool:
        """ftfy's is_bad(text), searching only windows around non-ASCII runs."""
        reach = self.width - 1
        lo = hi = -1
        for run in NON_ASCII.finditer(text):
            start, end = max(run.start() - reach, 0), run.end() + reach
            if start > hi:
                if hi > lo and BADNESS_RE.search(text, lo, hi):
                    return True
                lo = start
            hi = end
        return hi > lo and BADNESS_RE.search(text, lo, hi) is not None

    def unchanged(self, text: str, form: str) -> bool:
        return not self.trigger_re.search(text) and unicodedata.is_normalized(form, text) and not self.is_bad(text)


@functools.cache
def shortcut() -> Optional[Shortcut]:
    try:
        width = badness_is_local(BADNESS_RE)
        points = trigger_code_points()
    except (AttributeError, ValueError, AssertionError, TypeError):
        return None
    if width is None:
        return None
    spans = [(a, b) for a, b in ranges(points) if not (0xD800 <= a and b <= 0xDFFF)]  # Arrow text has no surrogates
    re2 = "[" + "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in spans) + "]"
    py = "[" + "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges(points)) + "]"
    return Shortcut(triggers=re2, trigger_re=re.compile(py), width=width)
