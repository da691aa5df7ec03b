"""Job progress for people and scripts: `show_job_progress`, `JobProgressMonitor`,
`monitor_job_until_completion` (dj-monitor is its CLI).

The numbers are the progress fold (`djworker.progress`) over the job's event log and
its persisted partition plan, reconciled with its summary and final report, so totals
are known from the start, failed partitions are counted, the ETA comes from this run's
completed samples, and a rotated or disabled event log still shows what was done.
Works on running, completed, failed, stopped and interrupted jobs alike."""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

from .common import JobReader, is_finished, job_progress

__all__ = ["JobProgressMonitor", "is_finished", "monitor_job_until_completion", "show_job_progress"]


class JobProgressMonitor:
    """Progress of one job under base_dir (the recipe's work_dir, default
    ./outputs/partition-checkpoint-eventlog)."""

    def __init__(self, job_id: str, base_dir: Optional[str] = None):
        self.job_id = job_id
        self.base_dir = base_dir

    def get_progress_data(self, detailed: bool = False) -> dict[str, Any]:
        """The data model as a dict; raises JobNotFound (a FileNotFoundError) for an unknown job."""
        return job_progress(JobReader(self.job_id, self.base_dir), time.time(), detailed)

    def display_progress(self, detailed: bool = False, console: Any = None) -> dict[str, Any]:
        """Print the progress as rich tables and return the data shown."""
        from rich.console import Console

        from .render import render

        data = self.get_progress_data(detailed)
        (console or Console()).print(render(data, detailed))
        return data

    def watch(self, interval: float = 10.0, detailed: bool = False, console: Any = None) -> dict[str, Any]:
        """Redraw in place every `interval` seconds until the job ends; return the last data."""
        from .render import watch

        return watch(self, interval, detailed, console)


def show_job_progress(job_id: str, detailed: bool = False, base_dir: Optional[str] = None) -> dict[str, Any]:
    """Print a job's progress and return it as a dict (see JobProgressMonitor)."""
    return JobProgressMonitor(job_id, base_dir).display_progress(detailed)


def monitor_job_until_completion(job_id: str, check_interval: float = 30.0, base_dir: Optional[str] = None,
                                 on_update: Optional[Callable[[dict[str, Any]], None]] = None) -> dict[str, Any]:
    """Poll until the job ends in any final state (stopped and interrupted included); return the last data."""
    monitor = JobProgressMonitor(job_id, base_dir)
    while True:
        data = monitor.get_progress_data()
        if on_update:
            on_update(data)
        if is_finished(data):
            return data
        time.sleep(check_interval)
