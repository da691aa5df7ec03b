"""Executor: the contract the scheduler and the driver hold every executor to.

The driver owns scheduling and retries; an executor only runs PartitionTasks somewhere,
hands their events to the driver as they happen, and leaves nothing behind."""
from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import Future
from typing import Any, ClassVar, Optional

from ..run import PartitionTask


class Executor(ABC):
    # Whether request_stop() may be called from a signal handler (it takes no lock, makes no call out).
    stop_is_signal_safe: ClassVar[bool] = False

    @abstractmethod
    def submit(self, task: PartitionTask) -> Future:
        """A future whose result is the PartitionResult, or which raises the worker's error."""

    @abstractmethod
    def request_stop(self) -> None:
        """Running partitions checkpoint and yield (PartitionInterrupted) at their next op boundary."""

    @abstractmethod
    def shutdown(self, kill: bool = False) -> None:
        """Leave no process behind that this executor started; kill: do not wait for them."""

    def on_failure(self, err: BaseException) -> None:
        """Told of every failed task, so a broken pool can be rebuilt before the retry."""

    def check_alive(self) -> None:
        """Raise a DJError (ClusterLost) once the place the work runs is gone for good."""

    def describe(self) -> Optional[dict[str, Any]]:
        """Where the work runs, for job_summary.json (what a stopper needs to find it); None: in this process tree."""
        return None
