"""JobPaths: where every file of one job lives; the only place that names them.

The driver derives them from the recipe; the monitor, the stopper and retention take
them from the job's summary, because the recipe may have moved since the job ran."""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from ..storage import is_remote, join

# The recipe's default work_dir, where dj-monitor and dj-stop look unless told otherwise (DataJuicer's default).
DEFAULT_WORK_DIR = "./outputs/partition-checkpoint-eventlog"


def new_job_id(config_path: Optional[str], now: Optional[datetime] = None) -> str:
    """{YYYYMMDD}_{HHMMSS}_{config_name}_{suffix}, as DataJuicer names jobs."""
    now = now or datetime.now()
    name = Path(config_path).stem if config_path else "job"
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40]
    return f"{now:%Y%m%d_%H%M%S}_{safe}_{secrets.token_hex(3)}"


def absolute(uri: str) -> str:
    """Local paths are recorded absolute, so a summary's paths work from any directory."""
    return uri if is_remote(uri) else os.path.abspath(uri)


@dataclass(frozen=True)
class JobPaths:
    """Where each kind of job state lives (see README 'Directory layout')."""

    job_id: str
    job_dir: str          # {work_dir}/{job_id}: summary, metadata, lock, STOP
    data_dir: str         # partitions/, results/, intermediate/ (beside checkpoints when those are remote)
    checkpoint_root: str  # {checkpoint_dir}/{job_id}
    event_dir: str        # {event_log_dir}/{job_id}/event_logs (local, fast)

    @classmethod
    def of(cls, recipe: Any, job_id: str) -> "JobPaths":
        job_dir = join(absolute(recipe.work_dir), job_id)
        ckpt_root = join(absolute(recipe.checkpoint_dir), job_id) if recipe.checkpoint_dir else join(job_dir, "checkpoints")
        # Ray workers must reach partitions and results: keep them on shared object storage.
        data_dir = ckpt_root if (is_remote(ckpt_root) and not is_remote(job_dir)) else job_dir
        if recipe.event_log_dir:
            event_dir = os.path.join(absolute(recipe.event_log_dir), job_id, "event_logs")
        elif is_remote(job_dir):  # the event log is appended locally, never to object storage
            event_dir = os.path.join(os.path.abspath("outputs/event_logs"), job_id, "event_logs")
        else:
            event_dir = os.path.join(job_dir, "event_logs")
        return cls(job_id, job_dir, data_dir, ckpt_root, event_dir)

    @classmethod
    def recorded(cls, base_dir: Optional[str], job_id: str, summary: Any = None) -> "JobPaths":
        """An existing job's paths as its summary recorded them; the defaults under base_dir otherwise."""
        job_dir = join(absolute(base_dir or DEFAULT_WORK_DIR), job_id)
        s = summary.model_dump() if hasattr(summary, "model_dump") else dict(summary or {})
        return cls(job_id, s.get("job_dir") or job_dir, s.get("data_dir") or job_dir,
                   s.get("checkpoint_dir") or join(job_dir, "checkpoints"),
                   s.get("event_log_dir") or os.path.join(job_dir, "event_logs"))

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
    def partitions(self) -> str:
        return join(self.data_dir, "partitions")

    @property
    def results(self) -> str:
        return join(self.data_dir, "results")

    @property
    def intermediate(self) -> str:
        return join(self.data_dir, "intermediate")

    @property
    def events_file(self) -> str:
        return os.path.join(self.event_dir, "events.jsonl")

    @property
    def driver_file(self) -> str:
        """A local file the driver holds open while it runs: the proof that a pid is this job's driver.

        Beside the event log (always local), and there even with event logging off."""
        return os.path.join(self.event_dir, "driver.pid")
