"""JobTracker: a running driver's record of its job: the event fold, job_summary.json and the report.

Run state lives here and nowhere else (the plan is a value): every event the driver writes is
folded as it comes, never kept, since a big job's events would not fit in memory nor re-fold
per /progress poll. Events arrive from the driver's thread and the executor's event drainer
while the progress server reads, hence one lock."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable, Optional, Sequence

import orjson

from .config import Recipe
from .events import EventLog, EventType
from .jobs import JobPaths, JobSummary, Retention, resumption_command, write_summary
from .metrics import ResourceSampler, RunMetrics
from .plan import Plan
from .progress import Progress, ProgressFold, compact
from .report import mapping_report
from .storage import Storage


class JobTracker:
    def __init__(self, storage: Storage, paths: JobPaths, recipe: Recipe,
                 on_event: Optional[Callable[[dict], None]] = None):
        self.storage, self.paths, self.recipe, self.on_event = storage, paths, recipe, on_event
        self.fold = ProgressFold(history=False)  # every run's events: what the job has done
        self.run_metrics = RunMetrics()  # this run's events: its PERFORMANCE_METRIC
        self.sampler = ResourceSampler(recipe.event_logging.resource_usage_interval_s)
        self.summary: dict[str, Any] = {}
        self.plan: Optional[Plan] = None
        self._lock = threading.Lock()

    def record(self, event: dict[str, Any]) -> None:
        """The event log's listener: fold the event in, then tell the caller's on_event."""
        with self._lock:
            self.fold.add(event)
            self.run_metrics.add(event)
        if self.on_event:
            self.on_event(event)

    def replay(self, events: Iterable[dict[str, Any]]) -> None:
        """Earlier runs: their events, then the outcomes only their report still holds."""
        with self._lock:
            for event in events:
                self.fold.add(event)
            try:
                self.fold.seed_outcomes(orjson.loads(self.storage.read_bytes(self.paths.final_report)))
            except (FileNotFoundError, orjson.JSONDecodeError):
                pass

    def planned(self, plan: Plan) -> None:
        """The plan's partitions and totals: progress never depends on the events seen so far."""
        with self._lock:
            self.plan = plan
            self.fold.seed({"partitions": [{"partition_id": p.partition_id, "sample_count": p.sample_count}
                                           for p in plan.partitions]})

    def output_rows(self, pid: int) -> Optional[int]:
        with self._lock:
            return self.fold.output_rows(pid)

    def progress(self, now: float) -> Progress:
        totals = {"total_samples": self.plan.total_samples, "rejected_samples": self.plan.rejected_samples} \
            if self.plan else None
        with self._lock:
            return self.fold.result(totals, now)

    def live_progress(self) -> dict[str, Any]:
        """The compact progress (what /progress serves and job_summary.json keeps)."""
        return compact(self.progress(time.time()))

    def start(self, previous: Optional[JobSummary], job_id: str, config_path: Optional[str],
              overrides: Sequence[str], identity: dict[str, Any], event_log_file: Optional[str]) -> int:
        """Writes the summary of a new run (its attempt number is returned)."""
        self.summary = start_summary(self.recipe, self.paths, job_id, previous, config_path, overrides, identity,
                                     event_log_file)
        self.update_summary()
        return self.summary["attempts"]

    def update_summary(self, **fields: Any) -> None:
        self.summary.update(fields)
        write_summary(self.storage, self.paths, JobSummary.model_validate(self.summary))

    def performance(self, now: float) -> Optional[dict[str, Any]]:
        if "run_start_time" not in self.summary:
            return None
        with self._lock:
            return self.run_metrics.result(self.summary["run_start_time"], now)

    def sample_resources(self, log: EventLog) -> None:
        usage = self.sampler.sample()
        cpu = "" if usage["cpu_percent"] is None else f", CPU {usage['cpu_percent']:.0f}%"
        log.emit(EventType.RESOURCE_USAGE, message=f"{usage['processes']} processes, RSS {usage['rss_mb']:.0f} MB{cpu}",
                 scope="driver process tree (driver + local workers)", **usage)

    def write_report(self, job_id: str) -> None:
        if self.plan is None:
            return
        now = time.time()
        report = mapping_report(job_id, self.plan, self.progress(now), now)
        self.storage.put_bytes(self.paths.final_report, orjson.dumps(report.model_dump(), option=orjson.OPT_INDENT_2))


def start_summary(r: Recipe, paths: JobPaths, job_id: str, previous: Optional[JobSummary], config_path: Optional[str],
                  overrides: Sequence[str], identity: dict[str, Any], event_log_file: Optional[str]) -> dict[str, Any]:
    """job_summary.json at the start of a run: the earlier run's fields, then this run's."""
    before = previous.model_dump(exclude_none=True) if previous else {}
    now = time.time()
    return {
        **before,
        "job_id": job_id, "status": "running", "attempts": before.get("attempts", 0) + 1,
        "config_path": config_path, "project_name": r.project_name,
        "dataset_path": r.dataset_path, "export_path": r.export_path, "executor_type": r.executor_type,
        "work_dir": r.work_dir, "job_dir": paths.job_dir, "data_dir": paths.data_dir,
        "event_log_dir": paths.event_dir, "event_log_file": event_log_file, "driver_file": paths.driver_file,
        "retention": Retention(retention_policy=r.intermediate_storage.retention_policy,
                               max_retention_days=r.intermediate_storage.max_retention_days).model_dump(),
        "checkpoint_dir": paths.checkpoint_root, "checkpoint_strategy": r.checkpoint.effective.value,
        "start_time": before.get("start_time") or now, "run_start_time": now,
        "end_time": None, "error": None, "process": identity,
        "resumption_command": resumption_command(config_path, job_id, overrides, r),
        "ops": [name for name, _ in r.ops],
    }
