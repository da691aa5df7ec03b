"""Reading existing jobs for the monitor, the stopper and retention: JobReader, job_progress,
job_ids and list_running_jobs.

A job lives at {base_dir}/{job_id} (base_dir is the recipe's work_dir); its other
directories are wherever its summary recorded them."""
from __future__ import annotations

import os
import time
from typing import Any, Iterator, Optional

import orjson

from ..errors import DJError
from ..events import read_events
from ..progress import FINAL_STATES, progress, reconcile
from ..storage import Storage, join
from .liveness import DriverState, driver_state, is_running
from .lock import read_holder
from .paths import DEFAULT_WORK_DIR, JobPaths, absolute
from .summary import JobSummary, read_summary


class JobNotFound(DJError, FileNotFoundError):
    """No job with that id under the base dir."""


class JobReader:
    def __init__(self, job_id: str, base_dir: Optional[str] = None, storage: Optional[Storage] = None):
        self.job_id = job_id
        self.base_dir = base_dir or DEFAULT_WORK_DIR
        self.storage = storage or Storage()
        self.paths = JobPaths.recorded(self.base_dir, job_id)
        self.summary = read_summary(self.storage, self.paths)
        if self.summary is not None:
            self.paths = JobPaths.recorded(self.base_dir, job_id, self.summary)

    def require(self) -> JobSummary:
        if self.summary is None:
            if os.path.exists(self.paths.events_file):  # killed before its first summary write
                return JobSummary(job_id=self.job_id)
            raise JobNotFound(f"job {self.job_id} not found: no {self.paths.summary}; pass --base-dir "
                              f"(the recipe's work_dir, default {DEFAULT_WORK_DIR}, here {absolute(self.base_dir)})")
        return self.summary

    def reload(self) -> Optional[JobSummary]:
        self.summary = read_summary(self.storage, self.paths)
        return self.summary

    def _json(self, uri: str) -> Optional[dict[str, Any]]:
        try:
            return orjson.loads(self.storage.read_bytes(uri))
        except (FileNotFoundError, NotADirectoryError, orjson.JSONDecodeError):
            return None

    def plan(self) -> Optional[dict[str, Any]]:
        """The persisted partition plan: the source of every total."""
        return self._json(self.paths.mapping)

    def report(self) -> Optional[dict[str, Any]]:
        """final_mapping_report.json: the driver's per-partition outcome, kept past log rotation."""
        return self._json(self.paths.final_report)

    def lock_holder(self) -> Optional[dict[str, Any]]:
        return read_holder(self.storage, self.paths)

    def events(self) -> list[dict[str, Any]]:
        return list(read_events(self.paths.event_dir))

    def driver(self) -> DriverState:
        summary = self.summary or JobSummary()
        return driver_state(summary.process, summary.liveness_proof)

    def is_running(self, now: Optional[float] = None) -> bool:
        """Alive here, or (on another host) still heartbeating the job lock."""
        summary = self.summary or JobSummary()
        return is_running(summary.status, self.driver(), summary.process, self.lock_holder(),
                          time.time() if now is None else now)


OVERVIEW_KEYS = ("status", "project_name", "dataset_path", "export_path", "executor_type", "checkpoint_strategy",
                 "total_samples", "rejected_samples", "num_partitions", "partition_size", "attempts", "start_time",
                 "run_start_time", "end_time", "duration_s", "exit_code", "error", "job_dir", "event_log_dir",
                 "checkpoint_dir", "resumption_command", "ops")


def job_progress(job: JobReader, now: float, detailed: bool = False) -> dict[str, Any]:
    """The monitor's data model (`dj-monitor --json`): the progress fold over the job's events,
    reconciled with its summary and report, plus an overview of the summary and the driver."""
    summary, plan, driver = job.require(), job.plan(), job.driver()
    data = reconcile(progress(job.events(), plan, now), plan, now, summary.status, summary.start_time,
                     summary.end_time, job.report(), driver_dead=driver.state in ("gone", "reused"))
    out = data.model_dump()
    out["job_id"] = out["job_id"] or summary.job_id or job.job_id
    out["job_overview"] = {**{k: getattr(summary, k) for k in OVERVIEW_KEYS},
                           "driver": {"state": driver.state, "pid": driver.pid, "host": driver.host,
                                      "detail": driver.detail}}
    if not detailed:
        del out["operation_metrics"]
        del out["checkpoint_summary"]["saved"]
    out["generated_at"] = now
    return out


def is_finished(data: dict[str, Any]) -> bool:
    """Nothing runs: completed, failed, stopped, or interrupted (its driver died without an end event)."""
    return data["overall_progress"]["job_status"] in FINAL_STATES


def job_ids(base_dir: Optional[str] = None, storage: Optional[Storage] = None) -> Iterator[str]:
    storage = storage or Storage()
    base = base_dir or DEFAULT_WORK_DIR
    for name in storage.listdir(base):
        if storage.exists(join(base, name, "job_summary.json")):
            yield name


def list_running_jobs(base_dir: Optional[str] = None) -> list[dict[str, Any]]:
    """Jobs under base_dir whose driver verifiably runs: id, pid, host, start, progress."""
    storage = Storage()
    running = []
    for job_id in job_ids(base_dir, storage):
        job = JobReader(job_id, base_dir, storage)
        if not job.is_running():
            continue
        o = job_progress(job, time.time())["overall_progress"]
        summary = job.require()
        proc = summary.process or {}
        running.append({"job_id": job_id, "pid": proc.get("pid"), "host": proc.get("host"),
                        "start_time": summary.start_time, "run_start_time": summary.run_start_time,
                        "progress_percentage": o["progress_percentage"], "partitions": o["partitions"],
                        "eta_seconds": o["eta_seconds"], "job_dir": job.paths.job_dir})
    return running
