"""prepare_plan: the job's plan, reused (input unchanged) or built from the recipe, with its events."""
from __future__ import annotations

import traceback
from typing import Any, Optional

from .config import Recipe
from .errors import InputError
from .events import EventLog, EventType
from .jobs import JobPaths
from .plan import Plan, build_plan, check_input_unchanged, load_plan, save_plan
from .storage import Storage


def prepare_plan(storage: Storage, recipe: Recipe, paths: JobPaths, job_id: str, log: EventLog) -> tuple[Plan, dict]:
    """(plan, summary fields to record): a failure is logged as PROCESSING_ERROR, then raised."""
    try:
        plan = load_plan(storage, paths.mapping)
        if plan is not None:
            check_input_unchanged(storage, plan)
            log.emit(EventType.PROCESSING_COMPLETE, message=f"reusing the plan of {len(plan.partitions)} partitions",
                     partitions=len(plan.partitions), total_samples=plan.total_samples,
                     partition_size=plan.partition_size)
            return plan, {}
        return _new_plan(storage, recipe, paths, job_id, log)
    except Exception as err:
        log.emit(EventType.PROCESSING_ERROR, message="planning failed", phase="planning",
                 error=f"{type(err).__name__}: {err}", stack_trace=traceback.format_exc())
        raise


def _new_plan(storage: Storage, r: Recipe, paths: JobPaths, job_id: str, log: EventLog) -> tuple[Plan, dict]:
    rows, max_mb, reasons = r.partition_rows, r.partition_max_mb, None
    if r.partition.auto_configure:
        from .autoconf import choose_partition_size

        choice = choose_partition_size(storage, r)
        rows, max_mb, reasons = choice.size, choice.max_size_mb, choice.as_dict()
        log.emit(EventType.INFO, message=f"auto-configured partition size {rows}: {choice.reason}", auto_config=reasons)
    log.emit(EventType.PROCESSING_START, message="planning partitions", dataset_path=r.dataset_path)
    rejected = 0

    def on_reject(rej: Any) -> None:
        nonlocal rejected
        rejected += 1
        if r.malformed_records == "fail":
            raise InputError(f"{rej.file}:{rej.record}: {rej.reason}; fix the record or set malformed_records: reject")

    plan = build_plan(storage, job_id, r.dataset_path, r.text_key, rows, max_mb, paths.data_dir, paths.rejects,
                      on_reject, compression=r.intermediate_storage.compression, fmt=r.intermediate_format,
                      suffixes=r.suffixes,
                      # as DataJuicer's loader: a suffix_filter turns on the file-suffix column it reads
                      add_suffix=any(name == "suffix_filter" for name, _ in r.ops))
    save_plan(storage, paths.mapping, plan)
    if rejected:
        log.emit(EventType.WARNING, message=f"{rejected} malformed records rejected; see {plan.rejects_path}",
                 rejected=rejected, rejects_path=plan.rejects_path)
    log.emit(EventType.PROCESSING_COMPLETE, message=f"planned {len(plan.partitions)} partitions",
             partitions=len(plan.partitions), total_samples=plan.total_samples, partition_size=rows)
    fields: dict[str, Optional[Any]] = dict(num_partitions=len(plan.partitions), total_samples=plan.total_samples,
                                            rejected_samples=plan.rejected_samples, partition_size=rows,
                                            auto_config=reasons)
    return plan, fields
