"""What happens to intermediate data when a job ends, and to old jobs (`dj-process --cleanup`).

Intermediate data is a job's checkpoints, input partitions, per-partition results and
preserved per-op outputs. keep_all keeps it; keep_failed_only keeps it only if the job
did not succeed (so it can resume); cleanup_all removes it at any end (a failed job then
restarts from scratch). cleanup_on_success removes it after success whatever the policy.
A *stopped* job always keeps it: a stop is a pause, and the resume needs it. The partition
plan (metadata/dataset_mapping.json) goes with the partitions it names.

max_retention_days is age-based: at every job end (and on `dj-process --cleanup`) the
intermediate data of other finished jobs in the same work_dir whose last run ended
longer ago than that is removed. The exported output, job_summary.json, the final
report and the event log are never removed by retention."""
from __future__ import annotations

import posixpath
import time
from typing import Any, Optional

from loguru import logger

from .errors import DJError
from .export import can_stream, partial_export_paths
from .jobs import JobPaths, is_alive, read_summary
from .storage import Storage, is_temp_file, join


# ---- pure core --------------------------------------------------------------
def should_clean(policy: str, cleanup_on_success: bool, succeeded: bool) -> bool:
    if succeeded and cleanup_on_success:
        return True
    return {"keep_all": False, "keep_failed_only": succeeded, "cleanup_all": True}[policy]


def is_expired(summary: dict[str, Any], max_age_days: Optional[float], now: float, driver_alive: bool) -> bool:
    """Whether an old job's intermediate data is past retention. A job whose driver still
    runs never is; a crashed one (status still 'running') ages from its last start."""
    if max_age_days is None or driver_alive:
        return False
    ended = next((summary[k] for k in ("end_time", "run_start_time", "start_time") if summary.get(k) is not None), None)
    return ended is not None and now - float(ended) >= max_age_days * 86400


def intermediate_dirs(paths: JobPaths) -> list[str]:
    return [paths.checkpoint_root, join(paths.data_dir, "partitions"), paths.results, paths.intermediate]


# ---- shell ------------------------------------------------------------------
def apply_at_end(storage: Storage, paths: JobPaths, recipe: Any, succeeded: bool, now: Optional[float] = None) -> list[str]:
    """The recipe's retention for this job, then age-based retention for the others in work_dir.

    Never raises: a storage problem during cleanup is logged and leaves data in place,
    so it cannot turn a job's honest outcome into a crash."""
    cfg = recipe.intermediate_storage
    removed: list[str] = []
    try:
        status = (read_summary(storage, paths) or {}).get("status")
        if status != "stopped" and should_clean(cfg.retention_policy, cfg.cleanup_on_success, succeeded):
            removed += remove_intermediate(storage, paths, recipe.export_path)
        if cfg.max_retention_days is not None:
            removed += cleanup_old_jobs(storage, recipe.work_dir, cfg.max_retention_days, recipe, now, exclude={paths.job_id})
    except (DJError, OSError) as err:
        logger.warning("retention for job {} skipped: {}", paths.job_id, err)
    return removed


def remove_intermediate(storage: Storage, paths: JobPaths, export_path: Optional[str] = None) -> list[str]:
    """Remove one job's intermediate data (with an unfinished streamed export), and the partition
    plan with the partitions it names: a rerun of the job id then plans again instead of
    looking for files that are gone."""
    removed = []
    partial = partial_export_paths(export_path, paths.job_id) if export_path and can_stream(export_path) else []
    for uri in [*intermediate_dirs(paths), *partial]:
        if storage.exists(uri):
            storage.remove(uri, recursive=True)
            removed.append(uri)
    if removed:
        storage.remove(paths.mapping)
    return removed


def job_paths(recipe: Any, job_id: str, summary: dict[str, Any]) -> JobPaths:
    """Where an old job put its data: as its summary recorded it (the recipe may have changed since)."""
    now = JobPaths.of(recipe, job_id)
    return JobPaths(job_id, summary.get("job_dir") or now.job_dir, summary.get("data_dir") or now.data_dir,
                    summary.get("checkpoint_dir") or now.checkpoint_root, summary.get("event_log_dir") or now.event_dir)


def cleanup_old_jobs(storage: Storage, work_dir: str, max_age_days: Optional[float], recipe: Any,
                     now: Optional[float] = None, exclude: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Remove the intermediate data of jobs in work_dir whose last run ended max_age_days ago or more."""
    now = time.time() if now is None else now
    removed = []
    for job_id in storage.listdir(work_dir):
        if job_id in exclude:
            continue
        summary = read_summary(storage, JobPaths(job_id, join(work_dir, job_id), "", "", ""))
        if not summary:
            continue
        alive = summary.get("status") == "running" and is_alive(summary.get("process") or {})
        if not is_expired(summary, max_age_days, now, alive):
            continue
        removed += remove_intermediate(storage, job_paths(recipe, job_id, summary), summary.get("export_path"))
    return removed


def remove_temp_files(storage: Storage, paths: JobPaths, export_path: Optional[str]) -> list[str]:
    """intermediate_storage.cleanup_temp_files: the half-written files an interrupted run of this job
    left in its directories and beside its export. Nothing reads them; an export's can be as big
    as the dataset. Called under the job lock, so no live writer of this job owns them."""
    roots = sorted({paths.job_dir, paths.data_dir, paths.checkpoint_root})
    roots = [r for r in roots if not any(r != o and r.startswith(o.rstrip("/") + "/") for o in roots)]
    temp = [uri for root in roots for uri in storage.find(root) if is_temp_file(uri)]
    if export_path:
        directory, name = posixpath.split(export_path)
        temp += [join(directory or ".", n) for n in storage.listdir(directory or ".", prefix=name + ".tmp-")
                 if is_temp_file(n)]
        from .export import is_shard_name  # export_shard_size: shards are written beside the export path
        stem = name.split(".", 1)[0]
        temp += [join(directory or ".", n) for n in storage.listdir(directory or ".", prefix=stem + "-")
                 if is_temp_file(n) and is_shard_name(n, export_path)]
    for uri in temp:
        storage.remove(uri)
    return temp
