"""The mixin of ops that need a model file: found when the op is built, loaded in the worker.

An op lists the files it needs (`required_models`); building it resolves each one
(djworker.models.resolve), so a missing model fails while the recipe is validated,
before any work. The op keeps only where the model is; the model itself lives in the
per-process cache of djworker.models and is loaded once per worker process."""
from __future__ import annotations

from typing import Any

from pydantic import PrivateAttr, model_validator

from .. import models
from .base import Op


class ModelOp(Op):
    """Base of ops that load a model; `required_models` says which, by role."""

    _models: dict[str, models.ModelLocation] = PrivateAttr(default_factory=dict)

    def required_models(self) -> dict[str, models.ModelFile]:
        return {}

    @model_validator(mode="after")
    def _find_models(self):
        found, missing = {}, []
        for role, file in self.required_models().items():
            try:
                found[role] = models.resolve(file)
            except models.MissingModel as err:  # name every missing file at once, not one per attempt
                missing.append(err.what)
        if missing:
            raise ValueError(". ".join(missing) + f". {models.MissingModel.ADVICE[0].upper()}{models.MissingModel.ADVICE[1:]}")
        self._models = found
        return self

    def model(self, role: str) -> Any:
        return models.load(self._models[role])

    def model_locations(self) -> dict[str, models.ModelLocation]:
        """Where each model of this op was found (for reports and the compatibility check)."""
        return dict(self._models)

    def warm_up(self) -> None:
        super().warm_up()
        for role in self._models:
            self.model(role)


class SentencePieceWords(ModelOp):
    """DataJuicer's `tokenization=True` for the word-based filters: the words are the pieces
    of the `<lang>.sp.model` SentencePiece model instead of the whitespace split."""

    lang: str = "en"
    tokenization: bool = False

    def required_models(self) -> dict[str, models.ModelFile]:
        found = super().required_models()
        if self.tokenization:
            found["words"] = models.ModelFile("sentencepiece", models.sentencepiece_file(self.lang))
        return found

    def raw_words(self, text: str) -> list[str]:
        from .text_utils import split_words

        if self.tokenization:
            return self.model("words").encode_as_pieces(text)
        return split_words(text)
