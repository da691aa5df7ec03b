"""Runs partition tasks np at a time on an executor, retrying failures with backoff.

The driver owns retries (Ray's and the pool's own retries are off), so every attempt,
including one whose worker was killed, is an event with its retry_count. A partition
fails the job only after its retries are spent, and then only after the others ran.
Run state (attempts, outcomes, times) exists only as these events: the plan is never written."""
from __future__ import annotations

import heapq
import random
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from .errors import DJError, PartitionFailed
from .events import EventType
from .faults import failpoint
from .run import PartitionInterrupted, PartitionResult, PartitionTask


def backoff_delay(kind: str, attempt: int, base: float, cap: float, jitter: float, rng: random.Random) -> float:
    """Delay before retry number `attempt` (1-based): exponential, linear or fixed, with +-jitter."""
    raw = {"exponential": base * 2 ** (attempt - 1), "linear": base * attempt, "fixed": base}[kind]
    return max(0.0, min(raw, cap) * (1 + rng.uniform(-jitter, jitter)))


@dataclass
class RetryPolicy:
    max_retries: int
    kind: str = "exponential"
    base_s: float = 1.0
    cap_s: float = 60.0
    jitter: float = 0.25

    def is_final(self, attempt: int, err: BaseException) -> bool:
        """A user error cannot be fixed by retrying; anything else gets max_retries more tries."""
        permanent = isinstance(err, DJError) and not err.retryable and not isinstance(err, PartitionFailed)
        return attempt > self.max_retries or permanent


@dataclass
class Scheduler:
    executor: Any
    slots: int
    policy: RetryPolicy
    emit: Callable[..., Any]
    should_stop: Callable[[], bool]
    on_tick: Callable[[], None] = lambda: None
    on_done: Callable[[PartitionTask], None] = lambda task: None  # after its PARTITION_COMPLETE
    rng: random.Random = field(default_factory=random.Random)

    def run(self, tasks: list[PartitionTask]) -> list[tuple[int, str]]:
        """Run until every task completed, failed for good, or a stop drained the running ones.

        Returns (partition id, error) for the permanent failures."""
        queue = [(0.0, t.partition.partition_id, t) for t in tasks]
        heapq.heapify(queue)
        running: dict[Future, PartitionTask] = {}
        failed: list[tuple[int, str]] = []
        while queue or running:
            if hasattr(self.executor, "check_alive"):  # a lost cluster ends the job, not partition by partition
                self.executor.check_alive()
            stopping = self.should_stop()
            if stopping:
                self.executor.request_stop()
            now = time.time()
            while not stopping and queue and queue[0][0] <= now and len(running) < self.slots:
                _, _, task = heapq.heappop(queue)
                running[self.executor.submit(task)] = task
                self.emit(EventType.DEBUG, partition_id=task.partition.partition_id, retry_count=task.attempt,
                          message=f"submitted; {len(running)}/{self.slots} slots busy, {len(queue)} queued")
            if stopping and not running:
                break
            can_submit = queue and not stopping and len(running) < self.slots  # else only a completion wakes us
            timeout = max(0.0, min(0.5, queue[0][0] - time.time())) if can_submit else 0.5
            done, _ = wait(list(running), timeout=timeout, return_when=FIRST_COMPLETED)
            for fut in done:
                self._settle(fut, running.pop(fut), queue, failed)
            self.on_tick()
        return failed

    def _settle(self, fut: Future, task: PartitionTask, queue: list, failed: list) -> None:
        pid = task.partition.partition_id
        try:
            res: PartitionResult = fut.result()
        except PartitionInterrupted as err:
            self.emit(EventType.INFO, partition_id=pid, message=str(err))
            return
        except BaseException as err:  # noqa: BLE001 - every worker failure is a partition failure
            if hasattr(self.executor, "on_failure"):
                self.executor.on_failure(err)
            attempt = task.attempt + 1
            final = self.policy.is_final(attempt, err)
            p = self.policy
            delay = None if final else backoff_delay(p.kind, attempt, p.base_s, p.cap_s, p.jitter, self.rng)
            error = f"{type(err).__name__}: {err}"
            self.emit(EventType.PARTITION_FAILED, partition_id=pid, retry_count=task.attempt, error=error,
                      stack_trace="".join(traceback.format_exception(err)), final=final,
                      retry_in_s=None if delay is None else round(delay, 3))
            if final:
                failed.append((pid, error))
                return
            heapq.heappush(queue, (time.time() + delay, pid, replace(task, attempt=attempt)))
            return
        failpoint("partition_done")
        self.emit(EventType.PARTITION_COMPLETE, partition_id=pid, rows_in=res.rows_in, rows_out=res.rows_out,
                  duration_s=res.duration_s, retry_count=task.attempt, reused_ops=res.reused_ops,
                  stage=task.stage, stages=task.stages, storage_retries=getattr(res, "storage_retries", 0) or None)
        self.on_done(task)
