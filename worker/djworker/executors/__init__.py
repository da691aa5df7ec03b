"""The recipe's executor (local process pool or Ray), held to base.Executor's contract, and its lifetime in a run."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from .base import Executor


def make_executor(recipe: Any, on_event: Callable[[dict], None], ops: Sequence[Any] = ()) -> Executor:
    if recipe.is_ray:
        from .ray import RayExecutor

        return RayExecutor(recipe, on_event)
    from .local import LocalExecutor

    return LocalExecutor(recipe.np, on_event, warm=ops)


class Workers:
    """A run's executor: made on first use, reused across stages, told of a stop, always shut down."""

    def __init__(self, recipe: Any, on_event: Callable[[dict], None], stop: Any, ops: Sequence[Any] = (),
                 on_made: Callable[[Optional[dict]], None] = lambda where: None):
        self.recipe, self.on_event, self.stop, self.ops, self.on_made = recipe, on_event, stop, ops, on_made
        self.executor: Optional[Executor] = None

    def get(self) -> Executor:
        if self.executor is None:
            self.executor = make_executor(self.recipe, self.on_event, self.ops)
            if self.executor.stop_is_signal_safe:  # else the scheduler relays the stop (Ray's is an actor call)
                self.stop.relay = self.executor.request_stop
            self.on_made(self.executor.describe())
        return self.executor

    def shutdown(self) -> None:
        """Waits for the workers, or kills them after a stop request (they checkpointed first)."""
        if self.executor is not None:
            self.stop.relay = None
            self.executor.shutdown(kill=self.stop.requested)
            self.executor = None
