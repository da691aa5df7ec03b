"""run_job: one job from plan to export, in one session, always ending with one JOB_* end event.

The library entry point behind `dj-process`: session (lock, signals, STOP, /progress) -> plan ->
stages -> export -> finish. The plan is a value; run state is the tracker's event fold, from which
job_summary.json's progress and final_mapping_report.json are written."""
from __future__ import annotations

import posixpath
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from . import retention
from .checkpoint import compression_note
from .config import Recipe, build_ops, check_job_id
from .errors import DJError, JobStopped, PartitionFailed, RecipeError
from .events import EventLog, EventType, read_events
from .executors import Workers
from .export import StreamingExport, can_stream, export, export_sharded
from .jobs import JobPaths, new_job_id, read_summary
from .planning import prepare_plan
from .run import PartitionTask, hashes_path, result_store
from .scheduler import RetryPolicy
from .session import JobSession, job_session
from .stages import StageHooks, decide, run_stage, stage_ends, stage_tasks
from .storage import Storage, StorageOptions
from .tracker import JobTracker
from .tracer import TraceSettings, dedup_records, job_records, merged, write_trace


@dataclass
class JobOutcome:
    job_id: str
    status: str
    paths: JobPaths
    export: Optional[dict[str, Any]] = None
    error: Optional[str] = None
    exit_code: int = 0


@dataclass(frozen=True)
class Run:
    """What one run of a job works with; each part owns its own state."""

    recipe: Recipe
    job_id: str
    storage: Storage
    paths: JobPaths
    session: JobSession
    log: EventLog
    tracker: JobTracker
    workers: Workers


def run_job(recipe: Recipe, job_id: Optional[str] = None, config_path: Optional[str] = None,
            progress_port: Optional[int] = None, on_event: Optional[Callable[[dict], None]] = None,
            overrides: Sequence[str] = ()) -> JobOutcome:
    job_id = job_id or recipe.job_id or new_job_id(config_path)
    try:
        check_job_id(job_id)
    except ValueError as err:
        raise RecipeError(str(err)) from None
    storage, paths = Storage(StorageOptions.from_recipe(recipe)), JobPaths.of(recipe, job_id)
    ops = build_ops(recipe)
    previous = read_summary(storage, paths)
    tracker = JobTracker(storage, paths, recipe, on_event)
    with job_session(storage, paths, progress_port, tracker.live_progress,
                     lambda: _dashboard_routes(storage, paths)) as session:
        ev = recipe.event_logging
        log = EventLog(paths.event_dir, job_id, ev.max_log_size_mb, ev.backup_count, ev.enabled, ev.debug)
        log.listeners.append(tracker.record)
        if previous:  # fold the earlier runs in, so live progress knows what is done
            tracker.replay(read_events(paths.event_dir))
        workers = Workers(recipe, log.write, session.stop, ops,
                          lambda where: where is not None and tracker.update_summary(ray=where))
        run = Run(recipe, job_id, storage, paths, session, log, tracker, workers)
        try:
            attempt = tracker.start(previous, job_id, config_path, overrides, session.identity,
                                    log.path if log.enabled else None)
            log.emit(EventType.JOB_RESUMED if previous else EventType.JOB_START, message=f"attempt {attempt}",
                     attempt=attempt, config_path=config_path, executor_type=recipe.executor_type,
                     checkpoint_strategy=recipe.checkpoint.effective.value)
            return _execute(run, ops)
        except JobStopped as err:
            return _finish(run, "stopped", EventType.JOB_STOPPED, str(err), err.exit_code)
        except DJError as err:
            return _finish(run, "failed", EventType.JOB_FAILED, str(err), err.exit_code, trace=traceback.format_exc())
        except BaseException as err:  # a bug or an interrupt: still leave an honest record
            outcome = _finish(run, "failed", EventType.JOB_FAILED, f"{type(err).__name__}: {err}", 1,
                              trace=traceback.format_exc())
            if not isinstance(err, Exception):
                raise
            return outcome
        finally:
            workers.shutdown()
            log.close()


def _execute(run: Run, ops: list[Any]) -> JobOutcome:
    """Plan, every stage, export: a stop or a failed partition raises out of here."""
    _preflight(run)
    run.workers.get()  # workers start (and warm up) before the driver's planning threads run
    plan, planned = prepare_plan(run.storage, run.recipe, run.paths, run.job_id, run.log)
    if planned:
        run.tracker.update_summary(**planned)
    run.tracker.planned(plan)
    _remove_temp_files(run)
    ends, decisions, dedup_traces = stage_ends(ops), {}, {}
    trace = TraceSettings.of(run.recipe)
    streaming: Optional[StreamingExport] = None
    try:
        for stage, end in enumerate(ends):
            tasks = stage_tasks(run.recipe, run.paths, run.storage, run.job_id, plan, ops, end, decisions, stage,
                                len(ends))
            if end == len(ops):
                streaming = _streaming_export(run, tasks)
            _run_stage(run, tasks, streaming)
            if end < len(ops):
                decisions[end] = decide(run.storage, run.log, tasks, run.paths.checkpoint_root)
                if trace:
                    dedup_traces[end] = dedup_records(run.storage, tasks, decisions[end].digest, trace, hashes_path)
        run.workers.shutdown()
        if trace:
            _write_trace(run, tasks, ops, trace, dedup_traces)
        result, streaming = _export(run, tasks, streaming), None
    finally:
        if streaming is not None:
            streaming.close()  # what it appended stays, for the resume
    outcome = _finish(run, "completed", EventType.JOB_COMPLETE, "job completed", 0, export=result)
    retention.apply_at_end(run.storage, run.paths, run.recipe, "completed")
    return outcome


def _run_stage(run: Run, tasks: list[PartitionTask], streaming: Optional[StreamingExport]) -> None:
    """One stage through run_stage; a stop or a partition failed for good ends the job here."""
    r, rr, tracker = run.recipe, run.recipe.retry, run.tracker
    hooks = StageHooks(emit=run.log.emit, should_stop=run.session.should_stop, tick=lambda: _tick(run),
                       on_done=(lambda t: streaming.mark_ready(t.key(len(t.ops)))) if streaming else lambda t: None,
                       output_rows=tracker.output_rows)
    tracker.sample_resources(run.log)  # a baseline, so the next sample has a CPU rate
    result = run_stage(tasks, run.workers.get(), run.storage,
                       RetryPolicy(r.retries, r.backoff, rr.base_delay_s, rr.max_delay_s, rr.jitter), r.np, hooks)
    tracker.sample_resources(run.log)  # before the pool goes: the workers' memory counts
    resume = tracker.summary["resumption_command"]
    if result.stopped or run.session.stop.requested:
        run.workers.shutdown()
        raise JobStopped(f"job {run.job_id} stopped on request; resume with: {resume}")
    if result.failed:
        pid, error = result.failed[0]
        raise PartitionFailed(
            f"{len(result.failed)} of {len(tasks)} partitions failed after {r.retries} retries "
            f"(first: partition {pid}: {error}); the other partitions are kept, "
            f"fix the cause and resume with: {resume}")


def _tick(run: Run) -> None:
    run.session.tick(time.time())
    if run.tracker.sampler.due(time.time()):
        run.tracker.sample_resources(run.log)


def _preflight(run: Run) -> None:
    """Unwritable places fail now, not at the end; settings accepted without effect are said once."""
    r = run.recipe
    for uri in {run.paths.checkpoint_root, run.paths.data_dir}:
        run.storage.check_writable(uri)
    if r.export_path:
        run.storage.check_writable(posixpath.dirname(r.export_path) or ".")
    note = compression_note(r.intermediate_format, r.intermediate_storage.compression)
    for message in ([note] if note else []) + list(r.compat_warnings):
        run.log.emit(EventType.WARNING, message=message)


def _remove_temp_files(run: Run) -> None:
    """After the input check (a refused resume changes nothing), before any worker writes."""
    if run.tracker.summary["attempts"] > 1 and run.recipe.intermediate_storage.cleanup_temp_files:
        removed = retention.remove_temp_files(run.storage, run.paths, run.recipe.export_path)
        if removed:
            run.log.emit(EventType.INFO, message=f"removed {len(removed)} temp files an interrupted run left "
                         "half-written", removed=removed[:100])


def _streaming_export(run: Run, tasks: list[PartitionTask]) -> Optional[StreamingExport]:
    """The export appends each result as it is ready, unless the format or sharding needs them all."""
    r = run.recipe
    if not can_stream(r.export_path) or r.export_shard_size:
        return None
    return StreamingExport(run.storage, result_store(tasks[0], run.storage), [t.key(len(t.ops)) for t in tasks],
                           r.export_path, run.job_id)


def _write_trace(run: Run, tasks: list[PartitionTask], ops: list[Any], trace: TraceSettings,
                 dedups: dict[int, list]) -> None:
    """open_tracer: the partitions' and dedup stages' records merged into the job directory's trace/
    (DataJuicer 1.6 appends the job id to work_dir, so this is its {work_dir}/trace/)."""
    pieces, incomplete = job_records(run.storage, tasks, trace, dedups)
    files = merged(ops, pieces, trace.limit)
    written = write_trace(run.storage, run.paths.job_dir, files)
    run.log.emit(EventType.INFO, message=f"tracer: wrote {len(written)} trace files", trace_files=written,
                 records={name: len(records) for name, records in files.items()})
    if incomplete:
        run.log.emit(EventType.WARNING, message=f"tracer: {len(incomplete)} partitions ran some ops before these "
                     "trace settings were set (open_tracer, op_list_to_trace, trace_num, trace_keys); their "
                     "samples from those ops are missing from the trace", partitions=incomplete[:100])


def _export(run: Run, tasks: list[PartitionTask], streaming: Optional[StreamingExport]) -> Optional[dict[str, Any]]:
    r = run.recipe
    if not r.export_path:
        return None
    t0, reused = time.time(), streaming.reused if streaming is not None else 0
    keys, store = [t.key(len(t.ops)) for t in tasks], result_store(tasks[0], run.storage)
    if streaming is not None:
        result = streaming.finish(r.export_stats)
    elif r.export_shard_size:
        result = export_sharded(run.storage, store, keys, r.export_path, run.job_id, r.export_shard_size, r.export_stats)
    else:
        result = export(run.storage, store, keys, r.export_path, run.job_id, r.export_stats)
    run.log.emit(EventType.INFO, message=f"exported {result['rows']} rows to {result['path']}",
                 export_path=result["path"], rows_out=result["rows"], duration_s=time.time() - t0,
                 appended_by_earlier_runs=reused)
    return result


def _finish(run: Run, status: str, event: EventType, message: str, code: int, trace: Optional[str] = None,
            export: Optional[dict] = None) -> JobOutcome:
    """The run's PERFORMANCE_METRIC and end event, then the report and summary built from the fold."""
    log, tracker = run.log, run.tracker
    fields: dict[str, Any] = {"message": message}
    if status == "failed":
        fields.update(error=message, stack_trace=trace)
    perf = tracker.performance(time.time())
    if perf is not None:
        perf["storage_retries"] += run.storage.retries  # the driver's own (plan, listings, export)
        log.emit(EventType.PERFORMANCE_METRIC, **perf, peak_rss_mb=round(tracker.sampler.peak_rss / 2**20, 1),
                 message=f"{perf['rows_per_s']:.0f} rows/s: {perf['rows_in']} rows in {perf['wall_s']:.2f} s "
                         f"({perf['partitions_processed']} partitions processed, {perf['partitions_skipped']} skipped)")
    log.emit(event, **fields)
    tracker.write_report(run.job_id)  # after the end event: nothing is still "processing"
    now = time.time()
    tracker.update_summary(status=status, end_time=now, duration_s=now - tracker.summary.get("start_time", now),
                           error=message if status != "completed" else None, exit_code=code,
                           export=export, progress=tracker.live_progress(), performance=perf,
                           event_log_degraded=log.degraded)
    if status != "completed":
        retention.apply_at_end(run.storage, run.paths, run.recipe, status)
    return JobOutcome(run.job_id, status, run.paths, export, None if status == "completed" else message, code)


def _dashboard_routes(storage: Storage, paths: JobPaths) -> dict:
    """The dashboard's page, data and /metrics beside /progress, read from the job's files."""
    from .dashboard.server import routes
    from .dashboard.source import JobView

    return routes(JobView(paths.job_id, posixpath.dirname(paths.job_dir.rstrip("/")), storage))
