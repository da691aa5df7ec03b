"""make_executor: the recipe's executor (local process pool or Ray), held to base.Executor's contract."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from .base import Executor


def make_executor(recipe: Any, on_event: Callable[[dict], None], ops: Sequence[Any] = ()) -> Executor:
    if recipe.is_ray:
        from .ray import RayExecutor

        return RayExecutor(recipe, on_event)
    from .local import LocalExecutor

    return LocalExecutor(recipe.np, on_event, warm=ops)
