"""What the monitor and the stopper share: find a job, read its state, tell who runs it.

A job lives at {base_dir}/{job_id} (base_dir is the recipe's work_dir). Its event
log may live elsewhere; job_summary.json says where. Whether a job runs is decided
by its driver's identity (pid + process start time + host), never by a bare pid."""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator, Optional

import orjson
import psutil

from ..errors import DJError
from ..events import read_events
from ..progress import progress
from ..storage import Storage, join
from . import DEFAULT_WORK_DIR, LOCK_TTL_S

MARKER_ENV = "DJ_JOB_DRIVER"  # set by a driver; inherited by every process it starts
START_TIME_TOLERANCE_S = 0.01  # psutil reports Linux start times in clock ticks


class JobNotFound(DJError, FileNotFoundError):
    """No job with that id under the base dir."""


def driver_marker(job_id: str, identity: dict[str, Any]) -> str:
    """The value of MARKER_ENV for one run of a job: names that run's driver exactly,
    so an orphan found by it can only have been started by that run."""
    return f"{job_id}:{identity['pid']}:{float(identity['process_start_time']):.2f}:{identity['host']}"


@dataclass(frozen=True)
class DriverState:
    """Who the summary says runs the job, checked against this host's process table.

    state: alive | gone | reused (the pid belongs to another process now) |
    other_host (cannot be checked from here) | unknown (no identity recorded) |
    unproven (the pid matches but the process does not hold the job's event log open)."""

    state: str
    pid: Optional[int]
    host: Optional[str]
    detail: str

    @property
    def is_alive(self) -> bool:
        return self.state == "alive"


def driver_state(identity: Optional[dict[str, Any]], proof: Optional[str] = None) -> DriverState:
    """`proof` is the job's events.jsonl: a live driver always holds it open. pid + start time
    come from a file anyone with write access to work_dir can edit, so on their own they
    never prove that a process belongs to the job."""
    if not identity or "pid" not in identity:
        return DriverState("unknown", None, None, "the job summary records no driver process")
    pid, host, started = int(identity["pid"]), identity.get("host"), float(identity.get("process_start_time") or 0)
    if host != socket.gethostname():
        return DriverState("other_host", pid, host,
                           f"pid {pid} runs on host {host!r}, not on this host ({socket.gethostname()!r})")
    try:
        proc = psutil.Process(pid)
        created, status = proc.create_time(), proc.status()
    except psutil.NoSuchProcess:
        return DriverState("gone", pid, host, f"driver pid {pid} has exited")
    if abs(created - started) >= START_TIME_TOLERANCE_S:
        return DriverState("reused", pid, host, f"pid {pid} now belongs to an unrelated process "
                           f"({_name(proc)}, started {_clock(created)}; the driver started {_clock(started)})")
    if status == psutil.STATUS_ZOMBIE:
        return DriverState("gone", pid, host, f"driver pid {pid} has exited (zombie)")
    if not holds_open(proc, proof):
        return DriverState("unproven", pid, host, f"pid {pid} ({_name(proc)}) matches the recorded driver but does not "
                           f"hold the job's event log {proof!r} open; it is not provably this job's driver")
    return DriverState("alive", pid, host, f"driver pid {pid} on {host} since {_clock(started)}")


def holds_open(proc: psutil.Process, path: Optional[str]) -> bool:
    if not path:
        return False
    target = os.path.realpath(path)
    try:
        return any(os.path.realpath(f.path) == target for f in proc.open_files())
    except psutil.Error:
        return False


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return "?"


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


class JobUtils:
    """Read-only access to one job's summary, plan, event log and progress."""

    def __init__(self, job_id: str, base_dir: Optional[str] = None, storage: Optional[Storage] = None):
        self.job_id = job_id
        self.base_dir = base_dir or DEFAULT_WORK_DIR
        self.storage = storage or Storage()
        self.job_dir = join(self.base_dir, job_id)

    @property
    def summary_path(self) -> str:
        return join(self.job_dir, "job_summary.json")

    @property
    def stop_request_path(self) -> str:
        return join(self.job_dir, "STOP")

    def _read_json(self, uri: str) -> Optional[dict[str, Any]]:
        try:
            return orjson.loads(self.storage.read_bytes(uri))
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None

    def load_job_summary(self) -> Optional[dict[str, Any]]:
        return self._read_json(self.summary_path)

    def load_plan(self) -> Optional[dict[str, Any]]:
        """The persisted partition plan: the source of every total."""
        return self._read_json(join(self.job_dir, "metadata", "dataset_mapping.json"))

    def lock_holder(self) -> Optional[dict[str, Any]]:
        return self._read_json(join(self.job_dir, "job.lock"))

    def event_dir(self, summary: Optional[dict[str, Any]] = None) -> str:
        """Where events.jsonl lives: the summary knows (event_log_dir may be anywhere)."""
        summary = summary if summary is not None else self.load_job_summary()
        return (summary or {}).get("event_log_dir") or os.path.join(self.job_dir, "event_logs")

    def exists(self) -> bool:
        return self.load_job_summary() is not None or os.path.exists(os.path.join(self.event_dir(), "events.jsonl"))

    def require(self) -> dict[str, Any]:
        summary = self.load_job_summary()
        if summary is None and not self.exists():
            raise JobNotFound(f"job {self.job_id} not found: no {self.summary_path}; pass --base-dir "
                              f"(the recipe's work_dir, default {DEFAULT_WORK_DIR})")
        return summary or {}

    def load_event_logs(self, summary: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
        return list(read_events(self.event_dir(summary)))

    def progress(self, now: Optional[float] = None) -> dict[str, Any]:
        summary = self.load_job_summary()
        return progress(self.load_event_logs(summary), self.load_plan(), time.time() if now is None else now)

    def get_partition_status(self) -> dict[str, dict[str, Any]]:
        return self.progress()["partition_status"]

    def driver(self, summary: Optional[dict[str, Any]] = None) -> DriverState:
        summary = summary if summary is not None else self.load_job_summary()
        summary = summary or {}
        return driver_state(summary.get("process"), summary.get("event_log_file"))

    def is_running(self, summary: Optional[dict[str, Any]] = None, now: Optional[float] = None) -> bool:
        """Alive here, or (on another host) still heartbeating the job lock."""
        summary = summary if summary is not None else self.load_job_summary()
        if not summary or summary.get("status") != "running":
            return False
        state = self.driver(summary)
        if state.state == "other_host":
            return self.has_fresh_lock(state, now)
        return state.is_alive

    def has_fresh_lock(self, state: DriverState, now: Optional[float] = None) -> bool:
        holder = self.lock_holder() or {}
        now = time.time() if now is None else now
        return holder.get("pid") == state.pid and holder.get("host") == state.host and \
            now - float(holder.get("heartbeat") or 0) < LOCK_TTL_S


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
        utils = JobUtils(job_id, base_dir, storage)
        summary = utils.load_job_summary() or {}
        if not utils.is_running(summary):
            continue
        o = utils.progress()["overall_progress"]
        proc = summary.get("process") or {}
        running.append({"job_id": job_id, "pid": proc.get("pid"), "host": proc.get("host"),
                        "start_time": summary.get("start_time"), "run_start_time": summary.get("run_start_time"),
                        "progress_percentage": o["progress_percentage"], "partitions": o["partitions"],
                        "eta_seconds": o["eta_seconds"], "job_dir": utils.job_dir})
    return running
