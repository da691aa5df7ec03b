"""Job identity and bookkeeping: ids, paths, the run lock and job_summary.json.

The lock and the summary record who runs the job as pid + process start time +
host, so a stopper or a second run can tell a live holder from a reused pid."""
from __future__ import annotations

import os
import secrets
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import orjson
import psutil

from ..errors import JobLocked
from ..storage import Storage, is_remote, join

# The recipe's default work_dir, where dj-monitor and dj-stop look unless told otherwise (DataJuicer's default).
DEFAULT_WORK_DIR = "./outputs/partition-checkpoint-eventlog"
LOCK_TTL_S = 120  # a remote holder whose heartbeat is older than this is presumed dead


def new_job_id(config_path: Optional[str], now: Optional[datetime] = None) -> str:
    """{YYYYMMDD}_{HHMMSS}_{config_name}_{suffix}, as DataJuicer names jobs."""
    now = now or datetime.now()
    name = Path(config_path).stem if config_path else "job"
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40]
    return f"{now:%Y%m%d_%H%M%S}_{safe}_{secrets.token_hex(3)}"


@dataclass(frozen=True)
class JobPaths:
    """Where each kind of job state lives (see README 'Directory layout')."""

    job_id: str
    job_dir: str          # {work_dir}/{job_id}: summary, metadata, lock
    data_dir: str         # partitions/, results/, intermediate/ (beside checkpoints when those are remote)
    checkpoint_root: str  # {checkpoint_dir}/{job_id}
    event_dir: str        # {event_log_dir}/{job_id}/event_logs (local, fast)

    @classmethod
    def of(cls, recipe: Any, job_id: str) -> "JobPaths":
        job_dir = join(_absolute(recipe.work_dir), job_id)
        ckpt_root = join(_absolute(recipe.checkpoint_dir), job_id) if recipe.checkpoint_dir else join(job_dir, "checkpoints")
        # Ray workers must reach partitions and results: keep them on shared object storage.
        data_dir = ckpt_root if (is_remote(ckpt_root) and not is_remote(job_dir)) else job_dir
        if recipe.event_log_dir:
            event_dir = os.path.join(_absolute(recipe.event_log_dir), job_id, "event_logs")
        elif is_remote(job_dir):  # the event log is appended locally, never to object storage
            event_dir = os.path.join(os.path.abspath("outputs/event_logs"), job_id, "event_logs")
        else:
            event_dir = os.path.join(job_dir, "event_logs")
        return cls(job_id, job_dir, data_dir, ckpt_root, event_dir)

    @property
    def summary(self) -> str:
        return join(self.job_dir, "job_summary.json")

    @property
    def mapping(self) -> str:
        return join(self.job_dir, "metadata", "dataset_mapping.json")

    @property
    def final_report(self) -> str:
        return join(self.job_dir, "metadata", "final_mapping_report.json")

    @property
    def lock(self) -> str:
        return join(self.job_dir, "job.lock")

    @property
    def stop_request(self) -> str:
        return join(self.job_dir, "STOP")

    @property
    def rejects(self) -> str:
        return join(self.job_dir, "rejects", "rejects.jsonl")

    @property
    def results(self) -> str:
        return join(self.data_dir, "results")

    @property
    def intermediate(self) -> str:
        return join(self.data_dir, "intermediate")


def _absolute(uri: str) -> str:
    """Local paths are recorded absolute, so a summary's paths work from any directory."""
    return uri if is_remote(uri) else os.path.abspath(uri)


def process_identity(pid: Optional[int] = None) -> dict[str, Any]:
    pid = pid or os.getpid()
    proc = psutil.Process(pid)
    return {"pid": pid, "pgid": os.getpgid(pid), "process_start_time": proc.create_time(),
            "host": socket.gethostname()}


def is_alive(identity: dict[str, Any]) -> bool:
    """True only if that exact process (pid + start time) still runs on this host."""
    if identity.get("host") != socket.gethostname():
        return False
    try:
        proc = psutil.Process(int(identity["pid"]))
        return abs(proc.create_time() - float(identity["process_start_time"])) < 0.01 and \
            proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, KeyError, ValueError, TypeError):
        return False


class JobLock:
    """One live run per job id. A stale lock (dead holder, or a silent remote one) is taken over."""

    def __init__(self, storage: Storage, paths: JobPaths):
        self.storage, self.paths = storage, paths
        self.identity = {**process_identity(), "acquired_at": time.time()}

    def holder(self) -> Optional[dict[str, Any]]:
        try:
            return orjson.loads(self.storage.read_bytes(self.paths.lock))
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None

    def acquire(self) -> None:
        holder = self.holder()
        if holder and holder.get("pid") != os.getpid() and self._is_live(holder):
            since = datetime.fromtimestamp(holder.get("acquired_at", 0)).strftime("%H:%M:%S")
            raise JobLocked(f"job {self.paths.job_id} is running (pid {holder['pid']} on {holder['host']} since {since}); "
                            f"stop it with 'dj-stop {self.paths.job_id}' or pass another --job_id")
        self.heartbeat()

    def _is_live(self, holder: dict[str, Any]) -> bool:
        if holder.get("host") == socket.gethostname():
            return is_alive(holder)
        return time.time() - float(holder.get("heartbeat", 0)) < LOCK_TTL_S

    def heartbeat(self) -> None:
        self.storage.put_bytes(self.paths.lock, orjson.dumps({**self.identity, "heartbeat": time.time()}))

    def release(self) -> None:
        holder = self.holder()
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.storage.remove(self.paths.lock)


def resumption_command(config_path: Optional[str], job_id: str, overrides: list[str]) -> str:
    parts = ["dj-process", "--config", config_path or "<recipe.yaml>", "--job_id", job_id, *overrides]
    return " ".join(shlex.quote(p) for p in parts)


def read_summary(storage: Storage, paths: JobPaths) -> Optional[dict[str, Any]]:
    try:
        return orjson.loads(storage.read_bytes(paths.summary))
    except (FileNotFoundError, NotADirectoryError, orjson.JSONDecodeError):  # a stray file in work_dir is no job
        return None


def write_summary(storage: Storage, paths: JobPaths, summary: dict[str, Any]) -> None:
    storage.put_bytes(paths.summary, orjson.dumps(summary, option=orjson.OPT_INDENT_2, default=str))


def argv_overrides() -> list[str]:
    """The CLI's dotted overrides, repeated verbatim in the resumption command."""
    args, out, skip = sys.argv[1:], [], False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a in ("--config", "--job_id", "--job-id", "--progress-port"):
            skip = True
            continue
        if a.startswith(("--config=", "--job_id=", "--progress-port=")):
            continue
        out.append(a)
    return out
