"""JobSummary: job_summary.json as one pydantic model, written by the driver and read by everyone else.

The summary is the job's current state for people and tools (status, where its files
are, who runs it, how to resume it); the event log is its history."""
from __future__ import annotations

import os
import shlex
from typing import Any, Optional, Sequence

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from ..storage import Storage, is_remote
from .paths import JobPaths

# Settings of the CLI itself, not of the job: never repeated in a resumption command.
CLI_FLAGS = {"config", "job_id", "progress_port", "quiet", "cleanup", "list_ops"}
# Recipe keys that name local paths: a relative one is pinned absolute, so the command works from anywhere.
PATH_KEYS = ("dataset_path", "export_path", "work_dir", "checkpoint_dir", "event_log_dir")


class Retention(BaseModel):
    """The job's own retention settings, so a later `--cleanup` honours them rather than its own recipe's."""

    retention_policy: str = "keep_all"
    max_retention_days: Optional[float] = None


class JobSummary(BaseModel):
    """Every field is optional on read: summaries written by older versions still load."""

    model_config = ConfigDict(extra="allow")

    job_id: Optional[str] = None
    status: Optional[str] = None  # running | completed | failed | stopped
    attempts: int = 0
    config_path: Optional[str] = None
    project_name: Optional[str] = None
    dataset_path: Optional[str] = None
    export_path: Optional[str] = None
    executor_type: Optional[str] = None
    work_dir: Optional[str] = None
    job_dir: Optional[str] = None
    data_dir: Optional[str] = None
    event_log_dir: Optional[str] = None
    event_log_file: Optional[str] = None
    driver_file: Optional[str] = None
    checkpoint_dir: Optional[str] = None
    checkpoint_strategy: Optional[str] = None
    start_time: Optional[float] = None
    run_start_time: Optional[float] = None
    end_time: Optional[float] = None
    duration_s: Optional[float] = None
    error: Optional[str] = None
    exit_code: Optional[int] = None
    process: Optional[dict[str, Any]] = None
    resumption_command: Optional[str] = None
    ops: list[str] = []
    num_partitions: Optional[int] = None
    total_samples: Optional[int] = None
    rejected_samples: Optional[int] = None
    partition_size: Optional[int] = None
    auto_config: Optional[dict[str, Any]] = None
    ray: Optional[dict[str, Any]] = None
    export: Optional[dict[str, Any]] = None
    progress: Optional[dict[str, Any]] = None
    performance: Optional[dict[str, Any]] = None
    retention: Optional[Retention] = None

    @property
    def liveness_proof(self) -> list[str]:
        """The files a live driver of this job holds open (see jobs.liveness)."""
        return [p for p in (self.driver_file, self.event_log_file) if p]


def read_summary(storage: Storage, paths: JobPaths) -> Optional[JobSummary]:
    try:
        return JobSummary.model_validate_json(storage.read_bytes(paths.summary))
    except (FileNotFoundError, NotADirectoryError, ValidationError):  # a stray file in work_dir is no job
        return None


def write_summary(storage: Storage, paths: JobPaths, summary: JobSummary) -> None:
    storage.put_bytes(paths.summary, orjson.dumps(summary.model_dump(mode="json"), option=orjson.OPT_INDENT_2,
                                                  default=str))


def resumption_command(config_path: Optional[str], job_id: str, overrides: Sequence[str], recipe: Any = None) -> str:
    """The command that resumes this job from any directory: absolute paths, each setting once."""
    config = os.path.abspath(config_path) if config_path and not is_remote(config_path) else config_path
    pairs = override_pairs(overrides)
    for key in PATH_KEYS:
        value = getattr(recipe, key, None)
        if isinstance(value, str) and value and not is_remote(value) and not os.path.isabs(value):
            pairs.setdefault(key, os.path.abspath(value))
    parts = ["dj-process", "--config", config or "<recipe.yaml>", "--job_id", job_id]
    for key, value in pairs.items():
        parts += [f"--{key}", value]
    return " ".join(shlex.quote(p) for p in parts)


def override_pairs(argv: Sequence[str]) -> dict[str, str]:
    """`--a.b v` / `--a.b=v` tokens as {a.b: v}, the last of a repeated key winning; CLI flags dropped."""
    pairs: dict[str, str] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        key, eq, value = token.lstrip("-").partition("=")
        key = key.replace("-", "_")
        if key in ("quiet", "cleanup", "list_ops"):  # the CLI's switches take no value
            i += 1
            continue
        if not eq:
            value = argv[i + 1] if i + 1 < len(argv) else ""
            i += 1
        i += 1
        if key not in CLI_FLAGS:
            pairs.pop(key, None)  # re-inserted last: a later repeat wins and keeps its place
            pairs[key] = value
    return pairs
