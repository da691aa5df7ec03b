"""What a run cost: PERFORMANCE_METRIC (a fold over the run's events) and
RESOURCE_USAGE (samples of the driver's process tree: driver + local workers).

`performance`/`RunMetrics` are pure; `ResourceSampler` is the psutil shell the
driver calls between scheduling steps."""
from __future__ import annotations

import os
import time
from collections import defaultdict
from typing import Any, Iterable, Optional

import psutil


def performance(events: Iterable[dict[str, Any]], run_start: float, now: float) -> dict[str, Any]:
    """Throughput and where the time went, for the events of one run (timestamp >= run_start)."""
    fold = RunMetrics()
    for ev in events:
        if (ev.get("timestamp") or 0) >= run_start:
            fold.add(ev)
    return fold.result(run_start, now)


class RunMetrics:
    """The PERFORMANCE_METRIC fold, one event at a time (a driver adds its run's events as they come).

    Op and checkpoint times are summed over partitions, so with np workers they can exceed the wall."""

    def __init__(self) -> None:
        self.op_time: dict[str, float] = defaultdict(float)
        self.done = self.skipped = self.rows_in = self.rows_out = self.saves = self.loads = self.retries = 0
        self.storage_retries = 0  # the workers' (PARTITION_COMPLETE); the driver adds its own at the end
        self.save_s = 0.0

    def add(self, ev: dict[str, Any]) -> None:
        et = ev.get("event_type")
        if et == "OP_COMPLETE":
            self.op_time[ev.get("op_name") or "?"] += ev.get("duration_s") or 0.0
        elif et == "CHECKPOINT_SAVE":
            self.saves += 1
            self.save_s += ev.get("duration_s") or 0.0
        elif et == "CHECKPOINT_LOAD":
            self.loads += 1
        elif et == "PARTITION_SKIPPED":
            self.skipped += 1
        elif et == "PARTITION_FAILED" and not ev.get("final"):
            self.retries += 1
        elif et == "PARTITION_COMPLETE":  # rows in: read from the input; rows out: through the last stage
            self.storage_retries += ev.get("storage_retries") or 0
            stage, stages = ev.get("stage") or 0, ev.get("stages") or 1
            self.rows_in += (ev.get("rows_in") or 0) if stage == 0 else 0
            if stage == stages - 1:
                self.done += 1
                self.rows_out += ev.get("rows_out") or 0

    def result(self, run_start: float, now: float) -> dict[str, Any]:
        wall = max(now - run_start, 1e-9)
        return {
            "wall_s": round(wall, 3), "partitions_processed": self.done, "partitions_skipped": self.skipped,
            "rows_in": self.rows_in, "rows_out": self.rows_out, "rows_per_s": round(self.rows_in / wall, 1),
            "op_time_s": {name: round(t, 3) for name, t in self.op_time.items()},
            "checkpoint_saves": self.saves, "checkpoint_save_s": round(self.save_s, 3), "checkpoint_loads": self.loads,
            "retries": self.retries, "storage_retries": self.storage_retries,
        }


class ResourceSampler:
    """CPU and memory of this process and its children, at most once per interval (unless forced).

    CPU is the tree's CPU time between two samples over the wall between them, so 200 means
    two cores busy. Peak RSS is the highest sampled, not a kernel high-water mark."""

    def __init__(self, interval_s: float, pid: Optional[int] = None):
        self.interval_s = interval_s
        self.root = psutil.Process(pid or os.getpid())
        self.last_at: Optional[float] = None
        self.last_cpu = 0.0
        self.peak_rss = 0

    def due(self, now: float) -> bool:
        return self.last_at is None or now - self.last_at >= self.interval_s

    def sample(self) -> dict[str, Any]:
        procs = [self.root, *self._children()]
        rss = cpu = 0.0
        alive = 0
        for proc in procs:
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
                    cpu += times.user + times.system
                alive += 1
            except psutil.Error:  # a worker that exited between listing and reading
                continue
        now = time.time()
        cpu_percent = None
        if self.last_at is not None and now > self.last_at:
            cpu_percent = round(100 * max(0.0, cpu - self.last_cpu) / (now - self.last_at), 1)
        self.last_at, self.last_cpu = now, cpu
        self.peak_rss = max(self.peak_rss, int(rss))
        return {
            "processes": alive, "rss_mb": round(rss / 2**20, 1), "peak_rss_mb": round(self.peak_rss / 2**20, 1),
            "cpu_percent": cpu_percent, "system_available_mb": round(psutil.virtual_memory().available / 2**20, 1),
        }

    def _children(self) -> list[psutil.Process]:
        try:
            return self.root.children(recursive=True)
        except psutil.Error:
            return []
