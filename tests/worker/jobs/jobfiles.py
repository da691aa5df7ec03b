"""Factories for job directories on disk: a summary, a partition plan and an event log,
written exactly where the driver writes them (JobPaths), with the event log on its own path."""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import orjson
import psutil

from djworker.jobs import process_identity
from djworker.jobs.paths import JobPaths


def identity(kind: str) -> dict[str, Any]:
    """A driver identity that is alive (this process), gone, reused (this pid, another start) or elsewhere."""
    me = process_identity()
    if kind == "alive":
        return me
    if kind == "reused":
        return {**me, "process_start_time": me["process_start_time"] - 1000}
    if kind == "other_host":
        return {**me, "host": "another-node"}
    proc = subprocess.Popen(["true"])
    started = psutil.Process(proc.pid).create_time() if psutil.pid_exists(proc.pid) else time.time()
    proc.wait()
    return {"pid": proc.pid, "pgid": proc.pid, "process_start_time": started, "host": me["host"]}


def event(event_type: str, ts: float, job_id: str = "job1", **fields: Any) -> dict[str, Any]:
    return {"schema_version": 1, "event_type": event_type, "job_id": job_id, "timestamp": ts, "time": str(ts),
            "pid": 1, "host": "h", **fields}


def partition_run(pid: int, t0: float, ops: list[str], rows_out: Optional[list[int]] = None,
                  samples: int = 100) -> list[dict[str, Any]]:
    """The events of one partition going through `ops` from t0, one second per op."""
    evs = [event("PARTITION_START", t0, partition_id=pid, rows_in=samples, retry_count=0)]
    rows = samples
    for i, op in enumerate(ops):
        out = rows_out[i] if rows_out else rows
        evs += [event("OP_START", t0 + i, partition_id=pid, op_idx=i, op_name=op, rows_in=rows),
                event("OP_COMPLETE", t0 + i + 1, partition_id=pid, op_idx=i, op_name=op, rows_in=rows,
                      rows_out=out, duration_s=1.0),
                event("CHECKPOINT_SAVE", t0 + i + 1, partition_id=pid, op_idx=i, op_name=op,
                      checkpoint_path=f"/ckpt/p{pid}-{i}.json")]
        rows = out
    return evs


@dataclass
class FakeJob:
    base_dir: Path
    job_id: str
    event_log_dir: Path  # the recipe's event_log_dir, away from base_dir
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def paths(self) -> JobPaths:
        recipe = SimpleNamespace(work_dir=str(self.base_dir), event_log_dir=str(self.event_log_dir),
                                 checkpoint_dir=None)
        return JobPaths.of(recipe, self.job_id)

    @property
    def job_dir(self) -> Path:
        return Path(self.paths.job_dir)

    @property
    def event_dir(self) -> Path:
        return Path(self.paths.event_dir)

    @property
    def summary_path(self) -> Path:
        return Path(self.paths.summary)

    def write_summary(self, status: str = "running", driver: str = "alive", **fields: Any) -> dict[str, Any]:
        events_file = Path(self.paths.events_file)
        if driver == "alive":  # a live driver holds its event log open: that is the stopper's proof
            self.event_dir.mkdir(parents=True, exist_ok=True)
            self._held = open(events_file, "ab")
        summary = {"job_id": self.job_id, "status": status, "attempts": 1, "job_dir": str(self.job_dir),
                   "event_log_dir": str(self.event_dir), "event_log_file": str(events_file), "dataset_path": "/data/in.jsonl", "executor_type": "default",
                   "checkpoint_strategy": "every_op", "partition_size": 100, "start_time": time.time() - 60,
                   "process": identity(driver), "ops": ["a_mapper", "b_filter"],
                   "resumption_command": f"dj-process --config r.yaml --job_id {self.job_id}", **fields}
        self.job_dir.mkdir(parents=True, exist_ok=True)
        self.summary_path.write_bytes(orjson.dumps(summary))
        return summary

    def write_plan(self, counts: list[int]) -> None:
        plan = {"job_id": self.job_id, "total_samples": sum(counts), "rejected_samples": 0,
                "partitions": [{"partition_id": i, "sample_count": n} for i, n in enumerate(counts)]}
        Path(self.paths.mapping).parent.mkdir(parents=True, exist_ok=True)
        Path(self.paths.mapping).write_bytes(orjson.dumps(plan))

    def append(self, *evs: dict[str, Any]) -> None:
        self.event_dir.mkdir(parents=True, exist_ok=True)
        with open(self.paths.events_file, "ab") as fh:
            for ev in evs:
                fh.write(orjson.dumps({**ev, "job_id": self.job_id}) + b"\n")
