"""Chinese-text mappers: keep only Chinese characters, convert between scripts (OpenCC)."""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Literal

import regex

from .base import register
from .remove import TextMapper


@register("remove_non_chinese_character_mapper")
class RemoveNonChineseCharacterMapper(TextMapper):
    """Deletes every character outside U+4E00..U+9FA5, optionally keeping ASCII letters,
    ASCII digits and DJ's punctuation list (the space, `.,-%*/&()+!` and
    `，。《》•、＆—（）：？！“”·`). Newlines, tabs and other whitespace go."""

    keep_alphabet: bool = True
    keep_number: bool = True
    keep_punc: bool = True

    punctuation: ClassVar[str] = ".， ,\\-。%《*》/•、&＆(—)（+）：？!！“”·"

    def removed(self) -> regex.Pattern:
        kept = "\u4e00-\u9fa5"
        kept += "A-Za-z" if self.keep_alphabet else ""
        kept += "0-9" if self.keep_number else ""
        kept += self.punctuation if self.keep_punc else ""
        return _compiled_class(kept)

    def warm_up(self) -> None:
        self.removed()

    def map_text(self, text: str) -> str:
        return self.removed().sub("", text)


@functools.cache
def _compiled_class(kept: str) -> regex.Pattern:
    return regex.compile(f"[^{kept}]+", regex.DOTALL)


OPENCC_MODES = (
    "s2t", "t2s", "s2tw", "tw2s", "s2hk", "hk2s", "s2twp", "tw2sp", "t2tw", "tw2t", "hk2t", "t2hk", "t2jp", "jp2t",
)  # fmt: skip


@functools.cache
def opencc_converter(mode: str) -> Any:
    """One OpenCC converter per mode and process (its dictionaries ship inside the wheel)."""
    import opencc

    return opencc.OpenCC(f"{mode}.json")


@register("chinese_convert_mapper")
class ChineseConvertMapper(TextMapper):
    """Converts between Simplified, Traditional (Taiwan, Hong Kong) Chinese and Japanese
    Kanji with OpenCC 1.1.9 (the version DataJuicer 1.6.1 pins), using its `<mode>.json`
    configuration: s2t, t2s, s2tw, tw2s, s2hk, hk2s, s2twp, tw2sp, t2tw, tw2t, hk2t, t2hk,
    t2jp or jp2t."""

    mode: Literal[OPENCC_MODES] = "s2t"  # type: ignore[valid-type]

    def warm_up(self) -> None:
        opencc_converter(self.mode)

    def map_text(self, text: str) -> str:
        return opencc_converter(self.mode).convert(text)
