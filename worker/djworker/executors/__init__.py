"""Executors run PartitionTasks somewhere and report back; the driver owns scheduling.

Contract (both local.py and ray.py):
- `submit(task) -> Future` whose result is a PartitionResult or raises the worker's error;
- worker events reach `on_event` as they happen;
- `request_stop()` makes running partitions checkpoint and yield at their next op boundary;
- `shutdown(kill)` leaves no process behind that the executor started."""
from __future__ import annotations

from typing import Any, Callable, Sequence


def make_executor(recipe: Any, on_event: Callable[[dict], None], ops: Sequence[Any] = ()):
    if recipe.is_ray:
        from .ray import RayExecutor

        return RayExecutor(recipe, on_event)
    from .local import LocalExecutor

    return LocalExecutor(recipe.np, on_event, warm=ops)
