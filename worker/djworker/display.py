"""Terminal progress for dj-process: a rich bar on a TTY, plain log lines otherwise."""
from __future__ import annotations

import sys
from typing import Any, Optional, Sequence

from loguru import logger

from .engine import JobOutcome, run_job


def run_with_display(recipe: Any, job_id: Optional[str], config_path: Optional[str], progress_port: Optional[int],
                     quiet: bool = False, overrides: Sequence[str] = ()) -> JobOutcome:
    if quiet or not sys.stdout.isatty():
        def plain(event: dict[str, Any]) -> None:
            if event["event_type"] in ("JOB_START", "JOB_RESUMED", "PARTITION_COMPLETE", "PARTITION_FAILED",
                                       "JOB_COMPLETE", "JOB_FAILED", "JOB_STOPPED", "PROCESSING_COMPLETE"):
                from .events import describe
                logger.info(describe(event))
        return run_job(recipe, job_id, config_path, progress_port, on_event=None if quiet else plain,
                       overrides=overrides)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        parts = bar.add_task("partitions", total=None)
        samples = bar.add_task("samples", total=None)

        def fancy(event: dict[str, Any]) -> None:
            et = event["event_type"]
            if et == "PROCESSING_COMPLETE":
                bar.update(parts, total=event.get("partitions"))
                bar.update(samples, total=event.get("total_samples"))
            elif et in ("PARTITION_COMPLETE", "PARTITION_SKIPPED") and \
                    (event.get("stage") or 0) == (event.get("stages") or 1) - 1:  # the last stage finishes it
                bar.advance(parts)
                bar.advance(samples, event.get("rows_in") or 0)
        return run_job(recipe, job_id, config_path, progress_port, on_event=fancy)
