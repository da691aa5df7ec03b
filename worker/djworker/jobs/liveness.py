"""Whether a job's driver runs: the one liveness check the lock, stopper, monitor and retention share.

A driver is named by pid + process start time + host, never by a bare pid. On this
host it must also hold one of the job's files open (its driver file, or its event
log), because pid and start time come from a file anyone who can write work_dir can
edit. On another host only the lock's heartbeat can say it is alive."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Optional

import psutil

LOCK_TTL_S = 120  # a remote holder whose heartbeat is older than this is presumed dead
START_TIME_TOLERANCE_S = 0.01  # psutil reports Linux start times in clock ticks


def process_identity(pid: Optional[int] = None) -> dict[str, Any]:
    pid = pid or os.getpid()
    proc = psutil.Process(pid)
    return {"pid": pid, "pgid": os.getpgid(pid), "process_start_time": proc.create_time(),
            "host": socket.gethostname()}


@dataclass(frozen=True)
class DriverState:
    """Who the summary says runs the job, checked against this host's process table.

    state: alive | gone | reused (the pid belongs to another process now) |
    other_host (cannot be checked from here) | unknown (no identity recorded) |
    unproven (the pid matches but the process holds none of the job's files open)."""

    state: str
    pid: Optional[int]
    host: Optional[str]
    detail: str

    @property
    def is_alive(self) -> bool:
        return self.state == "alive"


def driver_state(identity: Optional[dict[str, Any]], proof: Optional[Iterable[Optional[str]]] = None) -> DriverState:
    """`proof`: files a live driver of this job holds open; without it (None), pid + start time suffice."""
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
    files = [p for p in proof or () if p]
    if proof is not None and not holds_open(proc, files):
        return DriverState("unproven", pid, host, f"pid {pid} ({_name(proc)}) matches the recorded driver but holds "
                           f"none of the job's files {files!r} open; it is not provably this job's driver")
    return DriverState("alive", pid, host, f"driver pid {pid} on {host} since {_clock(started)}")


def has_fresh_lock(identity: Optional[dict[str, Any]], holder: Optional[dict[str, Any]], now: float) -> bool:
    """The lock is held by that driver and its heartbeat is recent: how a driver on another host shows it lives."""
    identity, holder = identity or {}, holder or {}
    return holder.get("pid") == identity.get("pid") and holder.get("host") == identity.get("host") and \
        now - float(holder.get("heartbeat") or 0) < LOCK_TTL_S


def holder_is_live(holder: dict[str, Any], now: float) -> bool:
    """Whether a lock's holder still runs: checked here on this host, by heartbeat elsewhere."""
    if holder.get("host") == socket.gethostname():
        return driver_state(holder).is_alive
    return has_fresh_lock(holder, holder, now)


def is_running(status: Optional[str], state: DriverState, identity: Optional[dict[str, Any]],
               holder: Optional[dict[str, Any]], now: float) -> bool:
    """A job runs when its summary says so and its driver is alive here or heartbeating elsewhere."""
    if status != "running":
        return False
    if state.state == "other_host":
        return has_fresh_lock(identity, holder, now)
    return state.is_alive


def holds_open(proc: psutil.Process, paths: Iterable[str]) -> bool:
    targets = {os.path.realpath(p) for p in paths}
    if not targets:
        return False
    try:
        return any(os.path.realpath(f.path) in targets for f in proc.open_files())
    except psutil.Error:
        return False


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return "?"


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


MARKER_ENV = "DJ_JOB_DRIVER"  # set by a driver; inherited by every process it starts


def driver_marker(job_id: str, identity: dict[str, Any]) -> str:
    """The value of MARKER_ENV for one run of a job: names that run's driver exactly,
    so an orphan found by it can only have been started by that run."""
    return f"{job_id}:{identity['pid']}:{float(identity['process_start_time']):.2f}:{identity['host']}"
