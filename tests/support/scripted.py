"""An executor whose partition attempts follow a script, for scheduler and stage tests."""
from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from djworker.run import PartitionResult, PartitionTask


class ScriptedExecutor:
    """Each partition's attempts as scripted: an exception to raise, or success with `rows_out`
    rows out of 10. Records what was submitted and how often a stop was requested."""

    stop_is_signal_safe = False

    def __init__(self, script: dict[int, list[Any]] | None = None, rows_out: int = 7):
        self.script, self.rows_out = script or {}, rows_out
        self.submitted: list[tuple] = []
        self.stops = 0

    def submit(self, task: PartitionTask) -> Future:
        self.submitted.append((task.partition.partition_id, task.attempt, task.checkpoint_keys))
        fut: Future = Future()
        attempts = self.script.get(task.partition.partition_id, [])
        outcome = attempts[task.attempt] if task.attempt < len(attempts) else None
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(PartitionResult(task.partition.partition_id, 10, self.rows_out, "", 0, 0.0))
        return fut

    def request_stop(self) -> None:
        self.stops += 1
