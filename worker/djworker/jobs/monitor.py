"""Job progress for people and scripts: `show_job_progress`, `JobProgressMonitor`.

The numbers are the one fold (`djworker.progress.progress`) over the job's event
log and its persisted partition plan, so totals are known from the start, failed
partitions are counted and the ETA comes from this run's completed samples. Works
on running, completed, failed and stopped jobs alike. Run as a module it is dj-monitor:
`python -m djworker.jobs.monitor JOB_ID [--detailed] [--watch] [--json]`."""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Optional

from ..progress import progress
from .common import DriverState, JobUtils

FINAL_STATES = frozenset({"completed", "failed", "stopped", "interrupted"})
OVERVIEW_KEYS = ("status", "project_name", "dataset_path", "export_path", "executor_type", "checkpoint_strategy",
                 "total_samples", "rejected_samples", "num_partitions", "partition_size", "attempts", "start_time",
                 "run_start_time", "end_time", "duration_s", "exit_code", "error", "job_dir", "event_log_dir",
                 "checkpoint_dir", "resumption_command", "ops")


def operation_summary(metrics: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-op totals over partitions, counting each (partition, op) once: its latest attempt."""
    latest = {(m["partition_id"], m["op_idx"]): m for m in metrics}
    by_op: dict[tuple[int, str], dict[str, Any]] = {}
    for m in latest.values():
        agg = by_op.setdefault((m["op_idx"], m["op_name"]), {"op_idx": m["op_idx"], "op_name": m["op_name"],
                                                          "partitions": 0, "rows_in": 0, "rows_out": 0,
                                                          "duration_s": 0.0})
        agg["partitions"] += 1
        agg["rows_in"] += m["rows_in"]
        agg["rows_out"] += m["rows_out"]
        agg["duration_s"] += m["duration_s"]
    out = []
    for _, agg in sorted(by_op.items(), key=lambda kv: (kv[0][0] is None, kv[0][0] or 0)):
        dur, rin = agg["duration_s"], agg["rows_in"]
        out.append({**agg, "duration_s": round(dur, 4),
                    "throughput_rows_s": round(rin / dur, 1) if dur > 0 else None,
                    "reduction_ratio": round(1 - agg["rows_out"] / rin, 4) if rin else 0.0})
    return out


def job_progress(summary: dict[str, Any], events: list[dict[str, Any]], plan: Optional[dict[str, Any]],
                 driver: DriverState, now: float, detailed: bool = False) -> dict[str, Any]:
    """The monitor's data model, from what was read. Pure: the caller reads files and the clock.

    A driver that verifiably died without writing an end event (killed -9, node
    crash) is shown as `interrupted`: nothing runs, and the job resumes from its checkpoints."""
    interrupted = driver.state in ("gone", "reused") and _fold_status(events) == "running"
    if interrupted:
        last = max((e.get("timestamp") or 0 for e in events), default=now)
        events = [*events, {"event_type": "JOB_STOPPED", "timestamp": last}]
    data = progress(events, plan, now)
    overall = data["overall_progress"]
    if interrupted:
        overall["job_status"] = "interrupted"
    elif not events and summary.get("status"):  # event logging disabled: the summary is all there is
        overall["job_status"] = summary["status"]
    data["job_id"] = data["job_id"] or summary.get("job_id")
    data["job_overview"] = {**{k: summary.get(k) for k in OVERVIEW_KEYS},
                            "driver": {"state": driver.state, "pid": driver.pid, "host": driver.host,
                                       "detail": driver.detail}}
    data["operation_summary"] = operation_summary(data["operation_metrics"])
    if not detailed:
        del data["operation_metrics"]
    data["generated_at"] = now
    return data


def _fold_status(events: list[dict[str, Any]]) -> str:
    for ev in reversed(events):
        et = ev.get("event_type")
        if et in ("JOB_START", "JOB_RESUMED"):
            return "running"
        if et in ("JOB_COMPLETE", "JOB_FAILED", "JOB_STOPPED"):
            return "ended"
    return "pending"


def is_finished(data: dict[str, Any]) -> bool:
    return data["overall_progress"]["job_status"] in FINAL_STATES


class JobProgressMonitor:
    """Progress of one job under base_dir (the recipe's work_dir, default ./outputs)."""

    def __init__(self, job_id: str, base_dir: Optional[str] = None):
        self.job_id = job_id
        self.utils = JobUtils(job_id, base_dir)

    def get_progress_data(self, detailed: bool = False) -> dict[str, Any]:
        """The data model as a dict; raises JobNotFound (a FileNotFoundError) for an unknown job."""
        summary = self.utils.require()
        events = self.utils.load_event_logs(summary)
        return job_progress(summary, events, self.utils.load_plan(), self.utils.driver(summary), time.time(),
                            detailed)

    def display_progress(self, detailed: bool = False, console: Any = None) -> dict[str, Any]:
        """Print the progress as rich tables and return the data shown."""
        from ..cli.monitor import render
        from rich.console import Console

        data = self.get_progress_data(detailed)
        (console or Console()).print(render(data, detailed))
        return data

    def watch(self, interval: float = 10.0, detailed: bool = False, console: Any = None) -> dict[str, Any]:
        """Redraw in place every `interval` seconds until the job ends; return the last data."""
        from ..cli.monitor import watch

        return watch(self, interval, detailed, console)


def show_job_progress(job_id: str, detailed: bool = False, base_dir: Optional[str] = None) -> dict[str, Any]:
    """Print a job's progress and return it as a dict (see JobProgressMonitor)."""
    return JobProgressMonitor(job_id, base_dir).display_progress(detailed)


if __name__ == "__main__":
    from ..cli.monitor import main

    sys.exit(main())
