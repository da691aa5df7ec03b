"""Recipe entry -> op: every family's ops, DataJuicer's own through the adapter, and errors that name the fix."""
from __future__ import annotations

import difflib
from typing import Any

from pydantic import ValidationError

from ..errors import RecipeError
from . import _load_all  # noqa: F401  (importing the families registers them)
from .base import Op
from .dj_adapter import resolve_datajuicer_op
from .registry import registered

# Ops that exist in DataJuicer but need a downloaded model; we refuse them at
# validation time instead of failing mid-run.
MODEL_OPS = {
    "text_action_filter": "a spaCy model",
    "text_entity_dependency_filter": "a spaCy model",
    "sentence_split_mapper": "an NLTK punkt model",
}



def registered_ops() -> dict[str, type[Op]]:
    return registered()


def build_op(name: str, args: dict[str, Any] | None, where: str) -> Op:
    """Instantiate a recipe entry, or raise RecipeError naming the entry and the fix."""
    ops = registered_ops()
    if name not in ops:
        if name in MODEL_OPS:
            raise RecipeError(
                f"{where}: op {name!r} needs {MODEL_OPS[name]}, which this engine does not download; "
                "remove it from the recipe or install py-data-juicer and its model"
            )
        adapted = resolve_datajuicer_op(name, args or {}, where)
        if adapted is not None:
            return adapted
        hint = difflib.get_close_matches(name, ops, n=1)
        tip = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise RecipeError(f"{where}: unknown op {name!r}{tip}; see `dj-process --list-ops`")
    cls = ops[name]
    try:
        return cls(**(args or {}))
    except ValidationError as err:
        raise RecipeError(f"{where}.{name}: {describe_validation(err, cls.model_fields)}") from None


def describe_validation(err: ValidationError, known: dict[str, Any]) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            hint = difflib.get_close_matches(str(e["loc"][-1]), list(known), n=1)
            tip = f" (did you mean {hint[0]!r}?)" if hint else ""
            parts.append(f"unknown parameter {key!r}{tip}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            parts.append(f"{key}: {msg} (got {e.get('input')!r})" if key else msg)
    return "; ".join(parts)
