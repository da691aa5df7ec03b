"""What happens to intermediate data when a job ends, and to old jobs (`dj-process --cleanup`).

keep_all keeps everything; keep_failed_only keeps a job's checkpoints, partitions and
intermediate data only if it did not succeed (so it can resume); cleanup_all removes
them at any end (a failed job then restarts from scratch). cleanup_on_success removes
them after success whatever the policy. The exported output, the summary, the
metadata and the event log are never removed by retention."""
from __future__ import annotations

import time
from typing import Any

from .jobs import JobPaths, read_summary
from .storage import Storage, join


def should_clean(policy: str, cleanup_on_success: bool, succeeded: bool) -> bool:
    if succeeded and cleanup_on_success:
        return True
    return {"keep_all": False, "keep_failed_only": succeeded, "cleanup_all": True}[policy]


def intermediate_dirs(paths: JobPaths) -> list[str]:
    return [paths.checkpoint_root, join(paths.data_dir, "partitions"), paths.results, paths.intermediate]


def apply_at_end(storage: Storage, paths: JobPaths, recipe: Any, succeeded: bool) -> list[str]:
    cfg = recipe.intermediate_storage
    if not should_clean(cfg.retention_policy, cfg.cleanup_on_success, succeeded):
        return []
    removed = []
    for uri in intermediate_dirs(paths):
        if storage.exists(uri):
            storage.remove(uri, recursive=True)
            removed.append(uri)
    if not succeeded:  # nothing left to resume from: the next run plans again
        storage.remove(paths.mapping)
    return removed


def cleanup_old_jobs(storage: Storage, work_dir: str, max_age_days: float, recipe: Any, now: float | None = None) -> list[str]:
    """Remove intermediate data of finished jobs in work_dir older than max_age_days."""
    now = now or time.time()
    removed = []
    for job_id in storage.listdir(work_dir):
        paths = JobPaths.of(recipe, job_id)
        summary = read_summary(storage, paths)
        if not summary or summary.get("status") == "running":
            continue
        ended = summary.get("end_time") or summary.get("start_time") or now
        if now - float(ended) < max_age_days * 86400:
            continue
        for uri in intermediate_dirs(paths):
            if storage.exists(uri):
                storage.remove(uri, recursive=True)
                removed.append(uri)
    return removed
