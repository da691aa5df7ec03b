"""What happens to intermediate data when a job ends, and to old jobs (`dj-process --cleanup`).

Intermediate data is a job's checkpoints, input partitions, per-partition results and
preserved per-op outputs. keep_all keeps it; keep_failed_only keeps it only if the job
did not succeed (so it can resume); cleanup_all removes it at any end (a failed job then
restarts from scratch). cleanup_on_success removes it after success whatever the policy.
A *stopped* job always keeps it: a stop is a pause, and the resume needs it. The partition
plan (metadata/dataset_mapping.json) goes with the partitions it names.

max_retention_days is age-based and acts only on `dj-process --cleanup`: the intermediate
data of finished (completed or failed) jobs in work_dir whose last run ended that long ago
is removed, each job by the settings it recorded when it ran (its own retention_policy
and max_retention_days; keep_all or null keeps it forever). A job's end touches only its
own data. A running or stopped job is never touched: a stop is a pause, and a job that
says it runs may be alive on another host. The exported output, job_summary.json, the
final report and the event log are never removed by retention."""
from __future__ import annotations

import posixpath
import time
from typing import Any, Optional

from loguru import logger

from .errors import DJError
from .export import can_stream, partial_export_paths
from .jobs import JobPaths, JobSummary, read_summary
from .storage import Storage, is_temp_file, join

EXPIRABLE = ("completed", "failed")  # never running (maybe alive elsewhere) nor stopped (a pause)


# ---- pure core --------------------------------------------------------------
def should_clean(policy: str, cleanup_on_success: bool, succeeded: bool) -> bool:
    if succeeded and cleanup_on_success:
        return True
    return {"keep_all": False, "keep_failed_only": succeeded, "cleanup_all": True}[policy]


def is_expired(summary: JobSummary, now: float, default_days: Optional[float] = None) -> bool:
    """Whether a finished job's intermediate data is past retention, by that job's own settings.

    default_days stands in only for a summary that recorded no settings (written by an older version)."""
    if summary.status not in EXPIRABLE:
        return False
    own = summary.retention
    if own is not None and own.retention_policy == "keep_all":
        return False
    days = own.max_retention_days if own is not None else default_days
    ended = next((t for t in (summary.end_time, summary.run_start_time, summary.start_time) if t is not None), None)
    return days is not None and ended is not None and now - float(ended) >= days * 86400


def intermediate_dirs(paths: JobPaths) -> list[str]:
    return [paths.checkpoint_root, paths.partitions, paths.results, paths.intermediate]


# ---- shell ------------------------------------------------------------------
def apply_at_end(storage: Storage, paths: JobPaths, recipe: Any, status: str) -> list[str]:
    """The recipe's retention for this job, and only this job (a stopped one keeps everything).

    Never raises: a storage problem during cleanup is logged and leaves data in place,
    so it cannot turn a job's honest outcome into a crash."""
    cfg = recipe.intermediate_storage
    if status == "stopped" or not should_clean(cfg.retention_policy, cfg.cleanup_on_success, status == "completed"):
        return []
    try:
        return remove_intermediate(storage, paths, recipe.export_path)
    except (DJError, OSError) as err:
        logger.warning("retention for job {} skipped: {}", paths.job_id, err)
        return []


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


def cleanup_old_jobs(storage: Storage, work_dir: str, now: Optional[float] = None,
                     default_days: Optional[float] = None) -> list[str]:
    """`dj-process --cleanup`: remove the intermediate data of the finished jobs in work_dir that
    their own retention settings expire, wherever their summaries say it is."""
    now = time.time() if now is None else now
    removed = []
    for job_id in storage.listdir(work_dir):
        paths = JobPaths.recorded(work_dir, job_id)
        summary = read_summary(storage, paths)
        if summary is None or not is_expired(summary, now, default_days):
            continue
        removed += remove_intermediate(storage, JobPaths.recorded(work_dir, job_id, summary), summary.export_path)
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
