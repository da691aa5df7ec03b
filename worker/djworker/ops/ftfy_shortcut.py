"""ftfy 6.3.1's `fix_text`, recomposed from ftfy's own fixers and data so that it
skips work that provably changes nothing. The output is ftfy's, character for
character (tests/worker/ops/test_fast_paths.py compares it with plain ftfy and,
where py-data-juicer is installed, with DataJuicer's op).

How ftfy 6.3.1 works (the facts everything below rests on)
-----------------------------------------------------------
`fix_text(text, config)` cuts the text into segments: each line with its '\\n',
and a line longer than `max_decode_length` (10**6) in pieces of that length. Once
a segment holds '<', HTML unescaping is off for it and every later segment. Each
segment goes through `fix_and_explain`, which repeats one pass until the pass
changes nothing. A pass is, in order:

1. `unescape_html`: replaces matches of `&#?[0-9A-Za-z]{1,24};`;
2. `fix_encoding` (with ftfy's default config, whatever the caller's config);
3. the fixers `fix_c1_controls`, `fix_latin_ligatures`, `fix_character_width`,
   `uncurl_quotes`, `fix_line_breaks`, `fix_surrogates`, `remove_terminal_escapes`,
   `remove_control_chars`, each a translate table, a character class, or a pattern
   that starts with one fixed character;
4. `unicodedata.normalize(form, segment)`.

When `fix_text` is the identity (the pre-check, `FastFtfy.needs_fixing`)
-----------------------------------------------------------------------
`fix_text(T) == T` when T holds

(a) no '&', so step 1 has nothing to match;
(b) no match of BADNESS_RE: `fix_encoding` then returns its input at once (its
    first step returns a text with no mojibake, i.e. `not is_bad(text)`, unchanged,
    and then stops because nothing changed). A segment is a substring of T, so a
    segment has a match only if T has one; T is searched with an RE2 translation
    of BADNESS_RE that matches at least wherever the original matches (anchors are
    dropped and `\\w`, `\\s`, '.' widened to any character; literals, classes and
    repeats are kept as they are), so "no RE2 match in T" implies "no match in any
    segment". Pure ASCII text needs no search: every alternative of BADNESS_RE
    needs a non-ASCII character (checked on the parsed pattern, below);
(c) none of the characters a fixer of step 3 acts on (its trigger set, taken from
    ftfy's own tables and classes); without one, each fixer returns its input;
(d) no character of `normalization_unsafe(form)`: the characters whose combining
    class is not 0, that the form maps to something else on their own, or (for
    the composing forms NFC and NFKC) that can be the second half of a canonical
    composition (derived from every canonical two-character decomposition, plus
    the Hangul vowel and trailing jamo, which compose algorithmically). A text
    made only of the other characters is already in that form: decomposition
    leaves each character as it is (it is its own image), no reordering happens
    with every combining class 0, and nothing can compose with its left neighbour
    since no character is the second half of a composition. This is the Unicode
    quick check answering "yes", computed from the running Python's own
    `unicodedata`, the same tables `fix_text` normalises with.

With (a)-(d) the first pass changes no segment, so each segment, and hence T, is
returned unchanged. The pre-check tests (a)-(d) on the whole Arrow column with
`pyarrow.compute` (RE2), so such rows never become Python strings.

The rows that need ftfy
-----------------------
They run ftfy's own loop here (`FastFtfy.fix_text`), with its steps recomposed:

* a fixer of step 3 is skipped when the segment holds none of its trigger
  characters (one search for all triggers first, then one per fixer);
* `is_bad` searches BADNESS_RE only in windows around non-ASCII runs. That is
  exact because every alternative of the pattern needs a non-ASCII character, a
  match spans at most `width` characters, and the pattern has no lookaround and no
  anchor but `^` (which matches only at the true start of the string, also in
  `search(text, pos, endpos)`; `$` or `\\b` could wrongly match at a window's end).
  Checked on the parsed pattern;
* `fix_encoding` is ftfy 6.3.1's control flow (try each single-byte encoding the
  text fits, in ftfy's order; then `decode_inconsistent_utf8`; then the Latin-1 vs
  Windows-1252 rule; then C1 controls), calling ftfy's own byte fixers, with three
  equal-but-cheaper parts: the fast `is_bad`; "the text fits encoding E" (ftfy's
  `^[class]*$` match) as a set inclusion of the text's non-ASCII characters in the
  class, after checking that the class holds every ASCII character but 0x1A and
  holds '\\n' (so `$` cannot match before a final newline the class refused); and
  UTF8_DETECTOR_RE searched and substituted only inside windows around non-ASCII
  runs. The last is exact because every character that pattern can consume is in
  a set S (non-ASCII characters and ' '), every match needs a non-ASCII character,
  its only assertion is a lookbehind (which `finditer(text, pos, endpos)` evaluates
  on the characters before `pos`, as in a full scan), and each window is widened
  over S characters until it is bounded by characters outside S: no match can
  cross a window's edge, so a full scan finds exactly the matches of the window
  scans, in the same order.

Every structural fact above is checked on ftfy's parsed patterns and tables when
`shortcut()` is first called; the recomposed `fix_encoding` follows 6.3.1's code,
so another ftfy version (or a failed check) makes `shortcut()` None and callers use
plain `ftfy.fix_text`.

Over ~300 lines on purpose: one recomposition, kept whole so it can be checked against
ftfy pass by pass."""
from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

try:
    from re import _parser as sre_parse  # Python 3.11+
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore[no-redef]

import ftfy
import pyarrow as pa
import pyarrow.compute as pc
from ftfy import chardata, fixes
from ftfy.badness import BADNESS_RE

FTFY_VERSION = "6.3.1"
NON_ASCII = re.compile(r"[^\x00-\x7f]+")
HIGH_BYTES = re.compile(rb"[\x80-\xff]+")
HIGH_OR_SUB_BYTES = re.compile(rb"[\x1a\x80-\xff]+")
LOSSY_REPLACEMENT = "\ufffd".encode()  # what fixes.replace_lossy_sequences puts for each match
FORBIDDEN_OPS = {"ASSERT", "ASSERT_NOT", "GROUPREF", "GROUPREF_EXISTS", "GROUPREF_IGNORE"}
# `^` matches only at the true start of the string, also in search(text, pos, endpos);
# `$` or `\b` could wrongly match at a window's end.
START_ANCHORS = {"AT_BEGINNING", "AT_BEGINNING_STRING"}
NORMAL_FORMS = ("NFC", "NFKC", "NFD", "NFKD")
# Hangul syllables compose algorithmically: L+V, then LV+T (vowel and trailing jamo).
HANGUL_SECOND_HALVES = [*range(0x1161, 0x1176), *range(0x11A8, 0x11C3)]
SURROGATES = (0xD800, 0xDFFF)


class NotProvable(ValueError):
    """ftfy's internals are not of the shape the proof needs."""


def class_members(pattern: str) -> list[int]:
    """The code points of a pattern made of plain character classes."""
    out = []
    for op, items in sre_parse.parse(pattern):
        if str(op) != "IN":
            raise NotProvable(f"not a character class: {pattern!r}")
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
            raise NotProvable(f"unexpected class item {kind} in {pattern!r}")
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


def ranges(points) -> list[tuple[int, int]]:
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


def re2_spans(spans: list[tuple[int, int]], negate: bool = False) -> str:
    """An RE2 class for pyarrow. Surrogates are left out: Arrow's UTF-8 cannot hold
    them, so no Arrow string has one and leaving them out changes no match."""
    kept = []
    for a, b in spans:
        if a < SURROGATES[0] or b > SURROGATES[1]:  # not wholly inside the surrogates
            if a <= SURROGATES[1] and b >= SURROGATES[0]:  # straddles: cut them out
                kept += [(a, SURROGATES[0] - 1)] if a < SURROGATES[0] else []
                kept += [(SURROGATES[1] + 1, b)] if b > SURROGATES[1] else []
            else:
                kept.append((a, b))
    if not kept:
        return r"[^\x00-\x{10ffff}]" if not negate else r"[\x00-\x{10ffff}]"
    body = "".join(f"\\x{{{a:x}}}" + (f"-\\x{{{b:x}}}" if b > a else "") for a, b in kept)
    return "[" + ("^" if negate else "") + body + "]"


def re2_class(points) -> str:
    return re2_spans(ranges(points))


def to_re2(pattern: re.Pattern) -> str:
    """An RE2 pattern matching a superset of `pattern`'s matches in any substring of
    a text: literals, classes, repeats and alternations are kept; anchors are dropped
    and the categories (\\w, \\s, \\d) and '.' widened to any character."""
    if pattern.flags & re.IGNORECASE:
        raise NotProvable("IGNORECASE patterns are not translated")
    return sequence_re2(sre_parse.parse(pattern.pattern, pattern.flags))


ANY_CHAR = r"[\x00-\x{10ffff}]"


def sequence_re2(subpattern) -> str:
    return "".join(item_re2(op, value) for op, value in subpattern)


def item_re2(op, value) -> str:
    name = str(op)
    if name == "LITERAL":
        return re2_class([value])
    if name == "NOT_LITERAL":
        return re2_spans([(value, value)], negate=True)
    if name == "ANY":
        return ANY_CHAR
    if name == "AT":
        return ""
    if name == "IN":
        if any(str(kind) == "CATEGORY" for kind, _ in value):
            return ANY_CHAR
        negate = bool(value) and str(value[0][0]) == "NEGATE"
        items = value[1:] if negate else value
        return re2_spans(ranges(class_items(items, "")), negate=negate)
    if name == "BRANCH":
        return "(?:" + "|".join(sequence_re2(alt) for alt in value[1]) + ")"
    if name == "SUBPATTERN":
        return "(?:" + sequence_re2(value[-1]) + ")"
    if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
        lo, hi, body = value
        upper = "" if hi == sre_parse.MAXREPEAT else str(hi)
        return f"(?:{sequence_re2(body)}){{{lo},{upper}}}"
    raise NotProvable(f"no RE2 translation for {name}")


def is_non_ascii(code: int) -> bool:
    return code > 0x7F


def needs_seed(item, seed: Callable[[int], bool] = is_non_ascii) -> bool:
    """A mandatory item every match of which holds a `seed` character (by default a
    non-ASCII one)."""
    op, value = item
    name = str(op)
    if name == "LITERAL":
        return seed(value)
    if name == "IN":
        return all((str(k) == "LITERAL" and seed(v)) or (str(k) == "RANGE" and all(map(seed, range(v[0], v[1] + 1))))
                   for k, v in value)
    if name == "SUBPATTERN":
        return any(needs_seed(i, seed) for i in value[-1])
    if name in ("MAX_REPEAT", "MIN_REPEAT"):
        return value[0] >= 1 and any(needs_seed(i, seed) for i in value[2])
    if name == "BRANCH":
        return all(any(needs_seed(i, seed) for i in alt) for alt in value[1])
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
        if looks_outside(alternative) or not any(needs_seed(item) for item in alternative):
            return None
    return parsed.getwidth()[1]


def consumed(subpattern) -> set[int]:
    """Every code point a parsed pattern can consume; lookbehinds are skipped (they
    consume nothing and see the text before `pos`). Anything else that is not a
    literal, a class of literals and ranges, a group, a repeat or an alternation
    (lookahead, anchors, categories, '.', negated classes) is refused."""
    out: set[int] = set()
    for op, value in subpattern:
        name = str(op)
        if name == "LITERAL":
            out.add(value)
        elif name == "IN":
            out.update(class_items(value, "a local pattern"))
        elif name == "SUBPATTERN":
            out |= consumed(value[-1])
        elif name in ("MAX_REPEAT", "MIN_REPEAT"):
            out |= consumed(value[2])
        elif name == "BRANCH":
            for alt in value[1]:
                out |= consumed(alt)
        elif name in ("ASSERT", "ASSERT_NOT") and value[0] == -1:
            continue
        else:
            raise NotProvable(f"{name} in a local pattern")
    return out


def encoding_classes() -> dict[str, frozenset[str]]:
    """Per single-byte encoding ftfy tries, the characters its `^[class]*$` accepts.
    Checked: the class holds every ASCII character except possibly 0x1A, and '\\n'."""
    out = {}
    every_ascii_but_1a = {chr(c) for c in range(0x80)} - {"\x1a"}
    for encoding in chardata.CHARMAP_ENCODINGS:
        pattern = chardata.ENCODING_REGEXES[encoding]
        items = list(sre_parse.parse(pattern.pattern, pattern.flags))
        shape = [str(op) for op, _ in items]
        if shape != ["AT", "MAX_REPEAT", "AT"] or str(items[0][1]) != "AT_BEGINNING" or str(items[2][1]) != "AT_END":
            raise NotProvable(f"ENCODING_REGEXES[{encoding!r}] is not ^[class]*$")
        lo, _, body = items[1][1]
        if lo != 0 or len(body) != 1 or str(body[0][0]) != "IN":
            raise NotProvable(f"ENCODING_REGEXES[{encoding!r}] is not ^[class]*$")
        members = frozenset(map(chr, class_items(body[0][1], encoding)))
        if not every_ascii_but_1a <= members:
            raise NotProvable(f"ENCODING_REGEXES[{encoding!r}] misses an ASCII character")
        out[encoding] = members
    return out


@functools.cache
def normalization_unsafe(form: str) -> str:
    """RE2 class of the characters that a text must lack to be in `form` already (see
    (d) in the module docstring), from the running Python's unicodedata. Computed on
    first use (a pass over every code point, ~0.2 s), only if a row needs it."""
    import sys

    chars = list(map(chr, range(sys.maxunicode + 1)))
    decompositions = list(map(unicodedata.decomposition, chars))
    classes = list(map(unicodedata.combining, chars))
    composing = form in ("NFC", "NFKC")
    decomposing = "NFD" if form == "NFC" else "NFKD"
    # The rest have no decomposition and combining class 0: their own image in every
    # form. Hangul syllables decompose algorithmically, so they are looked at too.
    looked_at = [cp for cp, (d, k) in enumerate(zip(decompositions, classes)) if d or k]
    looked_at += range(0xAC00, 0xD7A4)
    unsafe: set[int] = set()
    second_halves: set[int] = set(HANGUL_SECOND_HALVES) if composing else set()
    for cp in looked_at:
        ch = chr(cp)
        if classes[cp] or unicodedata.normalize(form, ch) != ch:
            unsafe.add(cp)
        decomposition = decompositions[cp]
        if composing and decomposition and not decomposition.startswith("<") and len(decomposition.split()) == 2:
            second_halves.add(int(decomposition.split()[1], 16))
    unsafe |= second_halves
    # Belt and braces: a character whose full decomposition starts with a combining
    # mark or a second half could reorder or compose across its left edge.
    for cp in looked_at:
        first = unicodedata.normalize(decomposing, chr(cp))[:1]
        if first and (unicodedata.combining(first) or (composing and ord(first) in second_halves)):
            unsafe.add(cp)
    return re2_class(unsafe)


@dataclass(frozen=True)
class LocalPattern:
    """A pattern (str or bytes) every match of which holds at least one `seed`
    character and consumes only characters of `chars`, and whose only assertions are
    lookbehinds. Its matches are then found by scanning windows around the runs of
    seed characters, each widened over `chars` until bounded by other characters
    (or the text's ends): no match can cross such an edge, a lookbehind sees the
    characters before `pos` as in a full scan, and a match needs a seed, so every
    match of a full scan lies in exactly one window and the window scans find them
    all, in the same order. Built by `local_pattern`, which checks all of this on
    the parsed pattern."""

    pattern: re.Pattern
    seeds: re.Pattern  # runs of seed characters
    chars: frozenset  # 1-character strs, or ints for a bytes pattern

    def windows(self, text) -> Iterator[tuple[int, int]]:
        chars, end = self.chars, len(text)
        lo = hi = -1
        for run in self.seeds.finditer(text):
            if run.start() > hi:
                if hi > lo:
                    yield lo, hi
                lo = run.start()
                while lo > 0 and text[lo - 1] in chars:
                    lo -= 1
            hi = run.end()
            while hi < end and text[hi] in chars:
                hi += 1
        if hi > lo:
            yield lo, hi

    def finditer(self, text) -> Iterator[re.Match]:
        """pattern.finditer(text)."""
        for lo, hi in self.windows(text):
            yield from self.pattern.finditer(text, lo, hi)

    def search(self, text) -> bool:
        """pattern.search(text) is not None."""
        return next(self.finditer(text), None) is not None

    def sub(self, repl, text):
        """pattern.sub(repl, text) for a function `repl`, or a literal one (no backslash)."""
        pieces, last = [], 0
        for match in self.finditer(text):
            pieces += [text[last : match.start()], repl(match) if callable(repl) else repl]
            last = match.end()
        if not pieces:
            return text
        pieces.append(text[last:])
        return text[:0].join(pieces)


def local_pattern(pattern: re.Pattern, seeds: re.Pattern, seed: Callable[[int], bool]) -> LocalPattern:
    """The LocalPattern of `pattern`, after checking the facts its scan relies on.
    `seeds` finds maximal runs of the characters `seed` accepts."""
    if pattern.flags & re.IGNORECASE:
        raise NotProvable(f"{pattern.pattern!r} ignores case")
    parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    if parsed.getwidth()[0] < 1:
        raise NotProvable(f"{pattern.pattern!r} can match the empty string")
    if not any(needs_seed(item, seed) for item in parsed):
        raise NotProvable(f"{pattern.pattern!r} can match without a seed character")
    points = consumed(parsed)  # refuses lookahead, anchors, categories, '.'
    chars = frozenset(points) if isinstance(pattern.pattern, bytes) else frozenset(map(chr, points))
    return LocalPattern(pattern, seeds, chars)


def high_or_sub(byte: int) -> bool:
    """Bytes a sloppy single-byte encoding gives non-ASCII characters (and U+FFFD: 0x1A)."""
    return byte >= 0x80 or byte == 0x1A


def is_high(byte: int) -> bool:
    return byte >= 0x80


@dataclass(frozen=True)
class FastFtfy:
    width: int
    fixers: tuple[tuple[str, Callable[[str], str], re.Pattern], ...]
    any_fixer: re.Pattern  # one class of every fixer's triggers
    triggers: str  # RE2 class of every fixer trigger plus '&'
    badness_re2: str  # RE2 pattern matching wherever BADNESS_RE can
    encodings: tuple[tuple[str, frozenset[str]], ...]
    detector: LocalPattern  # UTF8_DETECTOR_RE
    altered: LocalPattern  # ALTERED_UTF8_RE (bytes)
    lossy: LocalPattern  # LOSSY_UTF8_RE (bytes)

    # -- the vectorised pre-check ------------------------------------------------
    def needs_fixing(self, texts: pa.Array, form: str) -> pa.Array:
        """Per row: False where (a)-(d) of the module docstring prove fix_text(row) == row."""
        touched = pc.match_substring_regex(texts, self.triggers)
        rest = pc.and_(pc.invert(touched), pc.invert(pc.string_is_ascii(texts)))
        if not pc.any(rest).as_py():
            return touched
        where = pc.indices_nonzero(rest)
        others = pc.take(texts, where)
        suspicious = pc.or_(pc.match_substring_regex(others, self.badness_re2),
                            pc.match_substring_regex(others, normalization_unsafe(form)))
        flags = pc.replace_with_mask(touched, rest, suspicious)
        return flags

    # -- ftfy.badness.is_bad -----------------------------------------------------
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

    # -- ftfy.fix_text -----------------------------------------------------------
    def fix_text(self, text: str, config: ftfy.TextFixerConfig) -> str:
        """ftfy.fix_text(text, config): the same segments and '<' rule."""
        out, pos = [], 0
        while pos < len(text):
            end = text.find("\n", pos) + 1 or len(text)
            end = min(end, pos + config.max_decode_length)
            segment = text[pos:end]
            if config.unescape_html == "auto" and "<" in segment:
                config = config._replace(unescape_html=False)  # for this and every later segment, as in ftfy
            out.append(self.fix_segment(segment, config))
            pos = end
        return "".join(out)

    def fix_segment(self, text: str, config: ftfy.TextFixerConfig) -> str:
        """ftfy.fix_and_explain(text, config).text without the explanation."""
        while True:
            before = text
            if config.unescape_html and "&" in text:
                text = fixes.unescape_html(text)
            if config.fix_encoding and not text.isascii() and self.is_bad(text):
                text = self.fix_encoding(text, bad=True)  # ftfy passes no config here either
            if self.any_fixer.search(text):
                for name, fixer, trigger in self.fixers:
                    if getattr(config, name) and trigger.search(text):
                        text = fixer(text)
            if config.normalization is not None:
                text = unicodedata.normalize(config.normalization, text)
            if text == before:
                return text

    # -- ftfy.fix_encoding, with ftfy's default config ---------------------------
    def fix_encoding(self, text: str, bad: Optional[bool] = None) -> str:
        """ftfy.fix_encoding(text): one step at a time until a step changes nothing.
        `bad` is is_bad(text) when the caller knows it already."""
        while True:
            fixed = self.encoding_step(text, bad)
            if fixed == text:
                return fixed
            text, bad = fixed, None

    def encoding_step(self, text: str, bad: Optional[bool] = None) -> str:
        """One step of ftfy 6.3.1's fix_encoding (`_fix_encoding_one_step_and_explain`),
        default config, without the explanation."""
        if not text or text.isascii() or not (self.is_bad(text) if bad is None else bad):
            return text
        odd = set("".join(NON_ASCII.findall(text)))
        if "\x1a" in text:
            odd.add("\x1a")
        fits = []
        for encoding, members in self.encodings:
            if not odd <= members:
                continue
            fits.append(encoding)
            encoded = text.encode(encoding)
            try:
                # Bytes that would be UTF-8 but for an 0xA0 turned into a space (not in
                # MacRoman, where that would misread an en dash and a space).
                if encoding != "macroman" and self.altered.search(encoded):
                    encoded = fixes.restore_byte_a0(encoded)
                if encoding.startswith("sloppy"):
                    encoded = self.lossy.sub(LOSSY_REPLACEMENT, encoded)  # fixes.replace_lossy_sequences
                decoding = "utf-8-variants" if 0xED in encoded or 0xC0 in encoded else "utf-8"
                return encoded.decode(decoding)
            except UnicodeDecodeError:
                pass
        # ftfy searches UTF8_DETECTOR_RE first; with no match the substitution below
        # returns the text as it is, so one scan does for both.
        fixed = self.decode_inconsistent_utf8(text)
        if fixed != text:
            return fixed
        if "latin-1" in fits:
            # ftfy tests for "windows-1252", a name its list never holds (it has the
            # sloppy one), so this branch always re-decodes C1 controls; kept as it is.
            if "windows-1252" in fits:
                return text
            try:
                fixed = text.encode("latin-1").decode("windows-1252")
                if fixed != text:
                    return fixed
            except UnicodeDecodeError:
                pass
        if chardata.C1_CONTROL_RE.search(text):
            return fixes.fix_c1_controls(text)
        return text

    def decode_inconsistent_utf8(self, text: str) -> str:
        """ftfy.fixes.decode_inconsistent_utf8(text): each detector match that is
        shorter than the text and bad is replaced by its fix_encoding."""

        def fix_embedded(match: re.Match) -> str:
            piece = match.group(0)
            return self.fix_encoding(piece) if len(piece) < len(text) and self.is_bad(piece) else piece

        return self.detector.sub(fix_embedded, text)


def default_config_is_ftfys() -> bool:
    """fix_and_explain calls fix_encoding without a config: these are the defaults it uses."""
    c = ftfy.TextFixerConfig()
    return c.restore_byte_a0 and c.replace_lossy_sequences and c.decode_inconsistent_utf8 and c.fix_c1_controls


@functools.cache
def shortcut() -> Optional[FastFtfy]:
    """The fast ftfy, or None when ftfy's internals are not what the proof needs."""
    if ftfy.__version__ != FTFY_VERSION or not default_config_is_ftfys():
        return None
    try:
        width = local_badness_width(BADNESS_RE)
        triggers = fixer_triggers()
        fixers = tuple((name, ftfy.FIXERS[name], python_class(points)) for name, points in triggers)
        badness_re2 = to_re2(BADNESS_RE)
        encodings = tuple(encoding_classes().items())
        detector = local_pattern(chardata.UTF8_DETECTOR_RE, NON_ASCII, is_non_ascii)
        altered = local_pattern(chardata.ALTERED_UTF8_RE, HIGH_BYTES, is_high)
        lossy = local_pattern(chardata.LOSSY_UTF8_RE, HIGH_OR_SUB_BYTES, high_or_sub)
        if fixes.replace_lossy_sequences(b"\xc2\x1a") != LOSSY_REPLACEMENT:
            return None
    except (AttributeError, KeyError, ValueError, TypeError):  # NotProvable is a ValueError
        return None
    if width is None or any(not points for _, points in triggers):
        return None
    every_fixer = [p for _, points in triggers for p in points]
    return FastFtfy(width=width, fixers=fixers, any_fixer=python_class(every_fixer),
                    triggers=re2_class([ord("&"), *every_fixer]), badness_re2=badness_re2,
                    encodings=encodings, detector=detector, altered=altered, lossy=lossy)
