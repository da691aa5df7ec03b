"""Filters that score text with a model: language id (fastText), perplexity (KenLM over
SentencePiece pieces) and token count (a Hugging Face tokenizer). The model files have
DataJuicer's names and are found as djworker.models describes; see docs/models.md."""
from __future__ import annotations

import sys
from typing import ClassVar, Optional, Union

import pyarrow as pa
import pyarrow.compute as pc

from .. import models
from .base import Filter, register
from .text_utils import StatFilter, stat_column, text_list
from .uses_models import ModelOp


@register("language_id_score_filter")
class LanguageIDScoreFilter(ModelOp, Filter):
    """Keeps text whose fastText language (lid.176.bin) is one of `lang` with a score of at
    least min_score; an empty `lang` keeps any language. Stats: lang and lang_score."""

    lang: Union[str, list[str], None] = ""
    min_score: float = 0.8

    def required_models(self) -> dict[str, models.ModelFile]:
        return {"lid": models.ModelFile("fasttext", models.FASTTEXT_LID)}

    def languages(self) -> Optional[list[str]]:
        if not self.lang:
            return None
        return [self.lang] if isinstance(self.lang, str) else list(self.lang)

    def compute_stats(self, table: pa.Table) -> dict[str, pa.Array]:
        if stat_column(table, "lang") is not None and stat_column(table, "lang_score") is not None:
            return {}
        lid = self.model("lid")
        # DataJuicer predicts on the lowercased text with its line feeds turned into spaces.
        predictions = [lid.predict(t.lower().replace("\n", " ")) for t in text_list(self.op_name, self.texts(table))]
        return {
            "lang": pa.array([lang for lang, _ in predictions], pa.string()),
            "lang_score": pa.array([score for _, score in predictions], pa.float64()),
        }

    def keep(self, table: pa.Table, stats: dict[str, pa.Array]) -> pa.Array:
        ok = self.in_range(stat_column(table, "lang_score"), self.min_score, None)
        wanted = self.languages()
        if wanted is None:
            return ok
        return pc.and_(pc.is_in(stat_column(table, "lang"), pa.array(wanted, pa.string())), ok)


@register("perplexity_filter")
class PerplexityFilter(ModelOp, StatFilter):
    """Keeps text whose KenLM perplexity ({lang}.arpa.bin) over its SentencePiece pieces
    ({lang}.sp.model) is within min_ppl..max_ppl. Stat: perplexity, rounded to 0.1."""

    lang: str = "en"
    min_ppl: float = 0
    max_ppl: float = 1500

    stat_key: ClassVar[str] = "perplexity"

    def required_models(self) -> dict[str, models.ModelFile]:
        return {
            "pieces": models.ModelFile("sentencepiece", models.sentencepiece_file(self.lang)),
            "lm": models.ModelFile("kenlm", models.kenlm_file(self.lang)),
        }

    def bounds(self):
        return self.min_ppl, self.max_ppl

    def stat_of(self, text: str) -> float:
        lm = self.model("lm")
        joined = " ".join(self.model("pieces").encode_as_pieces(text))
        # Scored line by line, each line with its end-of-sentence token (hence the +1).
        log10_prob, tokens = 0.0, 0
        for line in joined.splitlines():
            log10_prob += lm.score(line)
            tokens += len(line.split()) + 1
        return round(10.0 ** (-log10_prob / tokens), 1) if tokens else 0.0


@register("token_num_filter")
class TokenNumFilter(ModelOp, StatFilter):
    """Keeps text whose number of tokens from the Hugging Face tokenizer `hf_tokenizer`
    (a folder holding tokenizer.json, found under that name) is min_num..max_num. Stat: num_token."""

    hf_tokenizer: str = models.DEFAULT_HF_TOKENIZER
    min_num: int = 10
    max_num: int = sys.maxsize

    stat_key: ClassVar[str] = "num_token"
    stat_type: ClassVar[pa.DataType] = pa.int64()

    def required_models(self) -> dict[str, models.ModelFile]:
        return {"tokenizer": models.ModelFile("hf_tokenizer", self.hf_tokenizer)}

    def bounds(self):
        return self.min_num, self.max_num

    def stat_of(self, text: str) -> int:
        return len(self.model("tokenizer").tokenize(text))

