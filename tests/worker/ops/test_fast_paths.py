"""The fast paths change speed only: each is compared with the plain computation
(ftfy.fix_text, or the regex on every row) over many generated strings."""

from __future__ import annotations

import random
import string

import ftfy
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from djworker.ops.catalog import build_op
from djworker.ops.ftfy_shortcut import shortcut
from djworker.ops.normalize import ftfy_config
from tests.worker.ops.vectors import VECTORS, load

CORPUS = [l["input"] for l in load(VECTORS / "fix_unicode_mapper.jsonl")]

# Unicode snippets that real text and mojibake are made of.
# fmt: off
SNIPPETS = [
    'café', 'naïve', 'Ünïcödé', 'Ñandú', 'straße', 'Œuvre', 'œil', 'æ', 'ø', 'Å', '\u212b', 'e\u0301', '한국어', '\u1100\u1161', '中文', '，',
    '。', '：', 'ｶﾀｶﾅ', 'ＡＢＣ', '１２３', '\u3000', '\xa0', '\u2000', '\u2009', '\u202f', '\u200b', '\ufeff', '“', '”', '‘',
    '’', '„', '‚', '‛', '‟', '\u02bc', '«', '»', '–', '—', '…', '•', '€', '£', '¥', '©', '®', '™', '°', '±', '²', '³', '½',
    '¼', '×', '÷', 'µ', '¶', '§', '¬', '¦', '¤', '¨', '¯', '¸', 'ﬁ', 'ﬂ', 'ﬃ', 'Ĳ', 'ŉ', 'Ǆ', 'ǅ', '①', 'Ⅳ', 'привет',
    'мир', 'Ελληνικά', 'αβγ', 'שלום', 'مرحبا', 'नमस्ते', 'ภาษาไทย', '😀', '👨\u200d👩\u200d👧', '🇺🇸', '\ufffd', '\x80', '\x81',
    '\x84', '\x85', '\x8d', '\x9d', '\x9f', '\u2028', '\u2029', '\u206a', '\ufff9', '\ufffc', '\U000e0041', '\x00', '\x07',
    '\x08', '\x0b', '\x0c', '\x1b[31m', '\x1b[0m', '\x1b', '\x7f', '\r', '\r\n', '\n', '\t', '&amp;', '&lt;', '&gt;',
    '&quot;', '&nbsp;', '&copy;', '&#65;', '&#x42;', '&EACUTE;', '&eacute;', '&notin;', '&amp', '&#;', '<', '>',
    '<p>', '</p>', 'à', 'Ã', 'Â', 'Ã ', 'Â ', '√±', '‚Ä', 'вЂ', 'β€', 'ā€', 'ÂÃ', '×²', 'à²',
]
# fmt: on


def mojibake(text: str, rng: random.Random) -> str:
    """Text as it looks after one or two wrong decodes."""
    out = text
    for _ in range(rng.choice([1, 1, 2])):
        codec = rng.choice(["latin-1", "cp1252", "mac_roman", "cp1251", "cp1253", "cp437"])
        out = out.encode("utf-8").decode(codec, errors=rng.choice(["replace", "ignore"]))
    return out


def generated(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    ascii_words = [
        "the",
        "data",
        "Hello",
        "x",
        "ok",
        "A1",
        "--",
        "''",
        '""',
        "``",
        "&",
        ";",
        "#",
        "%",
        "<b>",
        "a<b",
        "tag>",
    ]
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 25)):
            kind = rng.random()
            if kind < 0.35:
                parts.append(rng.choice(ascii_words))
            elif kind < 0.7:
                parts.append(rng.choice(SNIPPETS))
            elif kind < 0.85:
                source = rng.choice(SNIPPETS + ["café", "naïve", "“quoted”", "—", "中文", "€5"])
                parts.append(mojibake(source, rng))
            else:
                parts.append("".join(rng.choice(string.printable) for _ in range(rng.randint(1, 6))))
        texts.append("".join(p + rng.choice(["", " ", " ", "\n", "\t"]) for p in parts))
    return texts


def test_fast_ftfy_is_active():
    """ftfy 6.3.1's BADNESS_RE passes the locality proof, so the fast path is really used."""
    assert ftfy.__version__ == "6.3.1"
    fast = shortcut()
    assert fast is not None and fast.width == 7


@pytest.mark.parametrize("form,count,seed", [("NFC", 6000, 1), ("NFKC", 1500, 2), ("NFD", 1500, 3), ("NFKD", 1000, 4)])
def test_fast_ftfy_equals_ftfy(form, count, seed):
    config = ftfy_config(form)
    texts = generated(count, seed) + CORPUS
    op = build_op("fix_unicode_mapper", {"normalization": form}, "t")
    got = op.process(pa.table({"text": texts})).column("text").to_pylist()
    expected = [ftfy.fix_text(t, normalization=form) for t in texts]
    bad = [(t, e, g) for t, e, g in zip(texts, expected, got) if e != g]
    assert not bad, f"{len(bad)} differ, first: {bad[0]!r}"
    assert config.normalization == form


def test_fast_is_bad_equals_ftfy_is_bad():
    from ftfy.badness import is_bad

    fast = shortcut()
    texts = generated(8000, 5) + CORPUS
    assert [fast.is_bad(t) for t in texts] == [is_bad(t) for t in texts]
    assert sum(map(is_bad, texts)) > 500  # the generator does produce mojibake


def test_untouched_ascii_rows_really_are_untouched():
    """Rows the Arrow pre-check lets skip Python: plain ASCII without a trigger character."""
    rng = random.Random(6)
    texts = [
        "".join(rng.choice(string.printable + "\x0c&\x1b\x00\x7f") for _ in range(rng.randint(0, 80)))
        for _ in range(5000)
    ]
    arr = pa.array(texts)
    untouched = pc.and_(pc.string_is_ascii(arr), pc.invert(pc.match_substring_regex(arr, shortcut().triggers)))
    assert 500 < sum(untouched.to_pylist()) < 5000
    for text, skip in zip(texts, untouched.to_pylist()):
        if skip:
            assert ftfy.fix_text(text) == text, repr(text)
    op = build_op("fix_unicode_mapper", {}, "t")
    assert op.process(pa.table({"text": texts})).column("text").to_pylist() == [ftfy.fix_text(t) for t in texts]


PREFILTERED = [
    ("clean_links_mapper", {}),
    ("clean_email_mapper", {}),
    ("clean_ip_mapper", {}),
    ("clean_html_mapper", {}),
    ("whitespace_normalization_mapper", {}),
    ("punctuation_normalization_mapper", {}),
    ("remove_table_text_mapper", {}),
    ("remove_specific_chars_mapper", {}),
    ("remove_specific_chars_mapper", {"chars_to_remove": ["|", "*", "\\", ".", "-"]}),
]
# fmt: off
PIECES = [
    'http://a.bc/d', 'www.x.org', 'www1.', 'ex.com/p', 'a:b', 'abc:de', 'ratio:0.5', 'FE80:0:0:0:0:0:0:1',
    '1:2:3:4:5:6:7:8', '10.0.0.1', '1.2.3', '٣.٤', '١:٢:٣:٤:٥:٦:٧:٨', 'a@b.co', 'A@B.COM', 'x@y', '@', '.', ':', '/',
    'WWW.', 'wWw2.a', '\xa0', '\u3000', '\t', ' ', '\u200b', '\u2028', '\x85', '，', '。', '１', '…', '‘', '’', '—',
    'word', '中文', '(', ')', '<', '>', '<b>', '&amp;', '&', '\x00', '\r', '\n', '\n\n', '\x0c', '\ufeff', '|', 'a|b',
    'x y', '◆', '●', '*', '\\', '-',
]
# fmt: on


@pytest.mark.parametrize("name,args", PREFILTERED, ids=lambda v: v if isinstance(v, str) else str(sorted(v)))
def test_prefiltered_mapper_equals_its_function_on_every_row(name, args):
    rng = random.Random(7)
    texts = [
        "".join(rng.choice(PIECES) + rng.choice(["", " ", "  "]) for _ in range(rng.randint(0, 12)))
        for _ in range(4000)
    ]
    pools = [range(0x80), range(0x80, 0x800), range(0xFFF0, 0x10000), range(0x1F300, 0x1F700), range(0xE0000, 0xE0080)]
    texts += ["".join(chr(rng.choice(rng.choice(pools))) for _ in range(rng.randint(0, 30))) for _ in range(4000)]
    texts += [l["input"] for l in load(VECTORS / f"{name}.jsonl")]
    op = build_op(name, args, "t")
    got = op.process(pa.table({"text": texts})).column("text").to_pylist()
    assert got == [op.map_text(t) for t in texts]


MACRO_PIECES = ["\\newcommand", "\\newcommand*", "\\def", "\\de", "{\\a}", "{\\b1}", "\\a", "\\b1", "{x}", "{\\mathbb{R}}",
                "\n", "\r\n", " ", "}", "{", "word", "\\a1", "中"]


def test_expand_macro_prefilter_skips_only_rows_without_a_definition():
    """Rows without "\\newcommand" or "\\def" are skipped; running the expansion on every row gives the same."""
    rng = random.Random(7)
    texts = ["".join(rng.choice(MACRO_PIECES) for _ in range(rng.randint(0, 30))) for _ in range(3000)]
    op = build_op("expand_macro_mapper", {}, "t")
    fast = op.map_column(pa.chunked_array([pa.array(texts)])).to_pylist()
    assert fast == [op.map_text(t) for t in texts]
    assert sum(f != t for f, t in zip(fast, texts)) > 100  # the generated rows do define and use macros


# --- the kernels of the standard benchmark: generated tricky text, plain path, DataJuicer ---------

# fmt: off
TRICKY = [
    "http://a.b/c", "https://example.com/page/1?q=1", "www.site1.net", "WWW.X.ORG/p", "ftp://h/x(y)", "a:b",
    "(see http://x.y/(z))", "«https://x.y»", "user1@example.org", "A@B.COM", "a.b-c+d_e@x-y.co", "x@y", "@@",
    "mail:me@x.io", "\xa0", "\u3000", "\t", " ", "  ", "\u2028", "\x85", "\x1c", "\u200b", "\ufeff", "\r\n",
    "cafÃ©", "Ã ", "Ã\xa0", "â€œ", "â€\x9d", "â€™", "Ã¡", "Â·", "√±", "вЂ", "ГўВЂВ", "×²", "Ã‰", "\x93q\x94",
    "“quoted”", "‘s’", "&amp;", "&lt;b&gt;", "&#x42;", "<p>", "ﬁ", "ＡＢ", "e\u0301", "\u1100\u1161", "한",
    "\uf900", "Å", "\u212b", "ǖ", "\u0344", "\u0f73", "\x1b[31m", "\x00", "\x7f", "\ufffd", "\x1a",
    "data", "juicer", "text", "中文", "ελληνικά", "привет", "😀", "-", ".", ":", "/", "(", ")",
]
# fmt: on
STANDARD_MAPPERS = [
    ("clean_links_mapper", {}), ("clean_links_mapper", {"repl": "<LINK>"}), ("clean_email_mapper", {}),
    ("clean_email_mapper", {"repl": "<EMAIL>"}), ("whitespace_normalization_mapper", {}),
    ("fix_unicode_mapper", {}), ("fix_unicode_mapper", {"normalization": "NFKC"}),
    ("fix_unicode_mapper", {"normalization": "NFD"}), ("fix_unicode_mapper", {"normalization": "NFKD"}),
]


def tricky_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        parts = [rng.choice(TRICKY) if rng.random() < 0.6 else mojibake(rng.choice(TRICKY + SNIPPETS), rng)
                 for _ in range(rng.randint(0, 14))]
        texts.append("".join(p + rng.choice(["", " ", " ", "\n", "\t", "\xa0"]) for p in parts))
    return texts + ["", " ", "\n", "plain ascii only", "x" * 3000 + " http://a.b/c " + "y@z.com"]


@pytest.mark.parametrize("name,args", STANDARD_MAPPERS, ids=lambda v: v if isinstance(v, str) else str(sorted(v)))
def test_standard_kernel_equals_plain_per_row_path(name, args):
    texts = tricky_texts(3000, sum(map(ord, name)))
    op = build_op(name, args, "t")
    got = op.process(pa.table({"text": texts})).column("text").to_pylist()
    expected = [op.map_text(t) for t in texts]
    bad = [(t, e, g) for t, e, g in zip(texts, expected, got) if e != g]
    assert not bad, f"{len(bad)} differ, first: {bad[0]!r}"
    assert sum(e != t for e, t in zip(expected, texts)) > 100  # the generated text does get changed


@pytest.mark.parametrize("name,args", STANDARD_MAPPERS, ids=lambda v: v if isinstance(v, str) else str(sorted(v)))
def test_standard_kernel_equals_datajuicer(name, args):
    """DataJuicer's own op on the same texts, where py-data-juicer is importable."""
    base_op = pytest.importorskip("data_juicer.ops.base_op")
    import data_juicer.ops  # noqa: F401  (registers the ops)

    texts = tricky_texts(1500, sum(map(ord, name)) + 1)
    dj = base_op.OPERATORS.modules[name](**args)
    expected = dj.process_batched({"text": list(texts)})["text"]
    got = build_op(name, args, "t").process(pa.table({"text": texts})).column("text").to_pylist()
    bad = [(t, e, g) for t, e, g in zip(texts, expected, got) if e != g]
    assert not bad, f"{len(bad)} differ from DataJuicer, first: {bad[0]!r}"


def test_fix_unicode_pre_check_only_skips_rows_ftfy_leaves_alone():
    """Rows the Arrow pre-check lets through untouched really are fix_text's fixed points,
    including non-ASCII ones, and it does let many non-ASCII rows through."""
    rng = random.Random(11)
    clean = ["café", "naïve", "中文", "ελληνικά", "привет", "😀", "Å", "한국어", "—", "…", "€5", "½", "ß"]
    texts = tricky_texts(2000, 12) + [
        " ".join(rng.choice(clean + ["data", "text", "a.b"]) for _ in range(rng.randint(1, 20))) for _ in range(2000)
    ]
    arr = pa.array(texts)
    for form in ("NFC", "NFKC", "NFD", "NFKD"):
        flags = shortcut().needs_fixing(arr, form).to_pylist()
        for text, needs in zip(texts, flags):
            if not needs:
                assert ftfy.fix_text(text, normalization=form) == text, (form, text)
        skipped_non_ascii = sum(1 for t, n in zip(texts, flags) if not n and not t.isascii())
        assert skipped_non_ascii > 100, form  # NFD and NFKD also refuse the precomposed letters


@pytest.mark.parametrize("form", ["NFC", "NFKC", "NFD", "NFKD"])
def test_normalization_safe_characters_are_already_normal(form):
    """Every character outside normalization_unsafe(form), alone and in random runs, is in `form`."""
    import sys
    import unicodedata

    from djworker.ops.ftfy_shortcut import normalization_unsafe

    singles = pa.array([chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF])
    safe_mask = pc.invert(pc.match_substring_regex(singles, normalization_unsafe(form)))
    safe = pc.filter(singles, safe_mask).to_pylist()
    assert len(safe) > 1_000_000
    for ch in safe:
        if unicodedata.normalize(form, ch) != ch:
            raise AssertionError(f"{form}: U+{ord(ch):04X} is treated as safe but normalises to something else")
    rng = random.Random(form)
    composites = [c for c in safe if unicodedata.decomposition(c)] or safe
    for _ in range(3000):
        text = "".join(rng.choice(composites if rng.random() < 0.5 else safe) for _ in range(rng.randint(2, 12)))
        assert unicodedata.normalize(form, text) == text, (form, text)


def test_regex_whitespace_is_never_a_word_character():
    """clean_links' LocalSub needs `regex`'s \\s and \\w disjoint (the leading \\b sees the
    boundary character before a window as non-word), and \\d within \\S."""
    import sys

    import regex

    both = regex.compile(r"(?=\s)[\w\d]")
    chars = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    assert both.search(chars) is None
