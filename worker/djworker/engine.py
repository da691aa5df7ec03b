"""The driver: plan, schedule partitions with retries, export, account — and survive stops.

`run_job` is the library entry point behind `dj-process`. It holds the job lock,
writes every event, keeps job_summary.json current, and always ends the job with
exactly one of JOB_COMPLETE, JOB_FAILED or JOB_STOPPED."""
from __future__ import annotations

import posixpath
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import orjson
from loguru import logger

from . import retention
from .checkpoint import compression_note, keys_by_partition
from .config import Recipe, build_ops, check_job_id, export_format
from .errors import DJError, JobStopped, PartitionFailed, RecipeError
from .events import EventLog, EventType, read_events
from .executors import Executor, make_executor
from .export import StreamingExport, can_stream, export, export_sharded
from .jobs import JobPaths, JobSummary, Retention, new_job_id, read_summary, resumption_command, write_summary
from .metrics import ResourceSampler, RunMetrics
from .plan import Plan, build_plan, check_input_unchanged, load_plan, save_plan
from .progress import ProgressFold, compact
from .run import PartitionTask, done_root, result_store
from .scheduler import RetryPolicy, Scheduler
from .session import JobSession, job_session
from .stages import Decision, decide, plan_stage, stage_ends
from .storage import Storage, StorageOptions, join


@dataclass
class JobOutcome:
    job_id: str
    status: str
    paths: JobPaths
    export: Optional[dict[str, Any]] = None
    error: Optional[str] = None
    exit_code: int = 0


@dataclass
class Driver:
    recipe: Recipe
    job_id: str
    config_path: Optional[str] = None
    progress_port: Optional[int] = None
    on_event: Optional[Callable[[dict], None]] = None
    overrides: Sequence[str] = ()  # the CLI's dotted overrides, repeated in the resumption command
    storage: Storage = field(init=False)
    paths: JobPaths = field(init=False)
    # A plain bool, not a threading.Event: the signal handler sets it, and a handler that takes
    # a lock the interrupted main thread already holds (Event.set does) deadlocks the driver.
    stop_requested: bool = False

    def __post_init__(self) -> None:
        self.storage = Storage(StorageOptions.from_recipe(self.recipe))
        self.paths = JobPaths.of(self.recipe, self.job_id)
        # Folded as they come, never kept: a big job's events would not fit, nor re-fold per poll.
        self.fold = ProgressFold(history=False)  # every run's events: what the job has done
        self.run_metrics = RunMetrics()  # this run's events: its PERFORMANCE_METRIC
        self._fold_lock = threading.Lock()  # the driver's thread, the event drainer and the progress server
        self.plan: Optional[Plan] = None
        self.summary: dict[str, Any] = {}
        self.session: Optional[JobSession] = None  # set while run() holds the job
        self.executor: Optional[Executor] = None
        self.streaming: Optional[StreamingExport] = None
        self.sampler = ResourceSampler(self.recipe.event_logging.resource_usage_interval_s)

    # ---- bookkeeping ------------------------------------------------------
    def _record(self, event: dict[str, Any]) -> None:
        with self._fold_lock:
            self.fold.add(event)
            self.run_metrics.add(event)
        if self.on_event:
            self.on_event(event)

    def live_progress(self) -> dict[str, Any]:
        """The compact progress (what /progress serves and job_summary.json keeps)."""
        totals = {"total_samples": self.plan.total_samples, "rejected_samples": self.plan.rejected_samples} \
            if self.plan else None
        with self._fold_lock:
            return compact(self.fold.result(totals, time.time()))

    def _update_summary(self, **fields: Any) -> None:
        self.summary.update(fields)
        write_summary(self.storage, self.paths, JobSummary.model_validate(self.summary))

    def _dashboard_routes(self) -> dict:
        """The dashboard's page, data and /metrics beside /progress, read from the job's files."""
        from .dashboard.server import routes
        from .dashboard.source import JobView

        return routes(JobView(self.job_id, posixpath.dirname(self.paths.job_dir.rstrip("/")), self.storage))

    # ---- the job ----------------------------------------------------------
    def run(self) -> JobOutcome:
        ops = build_ops(self.recipe)
        found = read_summary(self.storage, self.paths)
        previous = found.model_dump(exclude_none=True) if found else None
        with job_session(self.storage, self.paths, self.request_stop, self.progress_port,
                         self.live_progress, self._dashboard_routes) as session:
            self.session = session
            ev = self.recipe.event_logging
            log = self.log = EventLog(self.paths.event_dir, self.job_id, ev.max_log_size_mb, ev.backup_count,
                                      ev.enabled, ev.debug)
            log.listeners.append(self._record)
            if previous:  # fold the earlier runs in, so live progress knows what is done
                for event in read_events(self.paths.event_dir):
                    self.fold.add(event)
            try:
                self._start(log, previous)
                return self._execute(log, ops)
            except JobStopped as err:
                return self._finish(log, "stopped", EventType.JOB_STOPPED, str(err), err.exit_code)
            except DJError as err:
                return self._finish(log, "failed", EventType.JOB_FAILED, str(err), err.exit_code,
                                    trace=traceback.format_exc())
            except BaseException as err:  # a bug or an interrupt: still leave an honest record
                outcome = self._finish(log, "failed", EventType.JOB_FAILED, f"{type(err).__name__}: {err}", 1,
                                       trace=traceback.format_exc())
                if not isinstance(err, Exception):
                    raise
                return outcome
            finally:
                self._shutdown_executor()
                self._close_streaming()
                log.close()

    def _start(self, log: EventLog, previous: Optional[dict[str, Any]]) -> None:
        r = self.recipe
        attempts = (previous or {}).get("attempts", 0) + 1
        self.summary = {
            **(previous or {}),
            "job_id": self.job_id, "status": "running", "attempts": attempts,
            "config_path": self.config_path, "project_name": r.project_name,
            "dataset_path": r.dataset_path, "export_path": r.export_path, "executor_type": r.executor_type,
            "work_dir": r.work_dir, "job_dir": self.paths.job_dir, "data_dir": self.paths.data_dir,
            "event_log_dir": self.paths.event_dir, "event_log_file": log.path if log.enabled else None,
            "driver_file": self.paths.driver_file,
            "retention": Retention(retention_policy=r.intermediate_storage.retention_policy,
                                   max_retention_days=r.intermediate_storage.max_retention_days).model_dump(),
            "checkpoint_dir": self.paths.checkpoint_root, "checkpoint_strategy": r.checkpoint.effective.value,
            "start_time": (previous or {}).get("start_time") or time.time(), "run_start_time": time.time(),
            "end_time": None, "error": None, "process": self.session.identity,
            "resumption_command": resumption_command(self.config_path, self.job_id, self.overrides, r),
            "ops": [name for name, _ in r.ops],
        }
        write_summary(self.storage, self.paths, JobSummary.model_validate(self.summary))
        kind = EventType.JOB_RESUMED if previous else EventType.JOB_START
        log.emit(kind, message=f"attempt {attempts}", attempt=attempts, config_path=self.config_path,
                 executor_type=r.executor_type, checkpoint_strategy=r.checkpoint.effective.value)

    def _plan(self, log: EventLog) -> Plan:
        try:
            return self._load_or_build_plan(log)
        except Exception as err:
            log.emit(EventType.PROCESSING_ERROR, message="planning failed", phase="planning",
                     error=f"{type(err).__name__}: {err}", stack_trace=traceback.format_exc())
            raise

    def _load_or_build_plan(self, log: EventLog) -> Plan:
        plan = load_plan(self.storage, self.paths.mapping)
        if plan is not None:
            check_input_unchanged(self.storage, plan)
            log.emit(EventType.PROCESSING_COMPLETE, message=f"reusing the plan of {len(plan.partitions)} partitions",
                     partitions=len(plan.partitions), total_samples=plan.total_samples, partition_size=plan.partition_size)
            return plan
        r = self.recipe
        rows, max_mb, reasons = r.partition_rows, r.partition_max_mb, None
        if r.partition.auto_configure:
            from .autoconf import choose_partition_size

            choice = choose_partition_size(self.storage, r)
            rows, max_mb, reasons = choice.size, choice.max_size_mb, choice.as_dict()
            log.emit(EventType.INFO, message=f"auto-configured partition size {rows}: {choice.reason}", auto_config=reasons)
        log.emit(EventType.PROCESSING_START, message="planning partitions", dataset_path=r.dataset_path)
        rejected = 0

        def on_reject(rej: Any) -> None:
            nonlocal rejected
            rejected += 1
            if r.malformed_records == "fail":
                from .errors import InputError
                raise InputError(f"{rej.file}:{rej.record}: {rej.reason}; fix the record or set malformed_records: reject")

        plan = build_plan(self.storage, self.job_id, r.dataset_path, r.text_key, rows, max_mb, self.paths.data_dir,
                          self.paths.rejects, on_reject, compression=r.intermediate_storage.compression,
                          fmt=r.intermediate_format, suffixes=r.suffixes)
        save_plan(self.storage, self.paths.mapping, plan)
        if rejected:
            log.emit(EventType.WARNING, message=f"{rejected} malformed records rejected; see {plan.rejects_path}",
                     rejected=rejected, rejects_path=plan.rejects_path)
        log.emit(EventType.PROCESSING_COMPLETE, message=f"planned {len(plan.partitions)} partitions",
                 partitions=len(plan.partitions), total_samples=plan.total_samples, partition_size=rows)
        self._update_summary(num_partitions=len(plan.partitions), total_samples=plan.total_samples,
                             rejected_samples=plan.rejected_samples, partition_size=rows, auto_config=reasons)
        return plan

    def _tasks(self, plan: Plan, ops: list[Any], end: int, decisions: dict[int, Any], stage: int,
               stages: int) -> list[PartitionTask]:
        r, p = self.recipe, self.paths
        result_format = export_format(r.export_path) if r.export_path else "parquet"
        # Result shards are encoded for the export: a resume that changes the export's format
        # (or asks for stats) must not reuse shards made for the old one.
        results_root = join(p.results, result_format + ("-stats" if r.export_stats else "")
                            + ("-keepstats" if r.keep_stats_in_res_ds else ""))
        return [PartitionTask(
            job_id=self.job_id, partition=part, ops=ops, strategy=r.checkpoint.effective, n_ops=r.checkpoint.n_ops,
            op_names=r.checkpoint.op_names, checkpoint_root=p.checkpoint_root, results_root=results_root,
            intermediate_root=p.intermediate if r.preserve_intermediate else None,
            storage_options=self.storage.options, fmt=r.intermediate_format,
            compression=r.intermediate_storage.compression, memory_map_arrow=r.memory_map_arrow,
            end=end, stage=stage, stages=stages,
            result_format=result_format, export_stats=r.export_stats, keep_stats=r.keep_stats_in_res_ds, batch_rows=r.arrow_batch_rows,
            decisions={i: (d.digest, d.drops.get(part.partition_id, [])) for i, d in decisions.items()})
            for part in plan.partitions]

    def _execute(self, log: EventLog, ops: list[Any]) -> JobOutcome:
        for uri in {self.paths.checkpoint_root, self.paths.data_dir}:
            self.storage.check_writable(uri)
        if self.recipe.export_path:  # a missing bucket or unwritable directory fails now, not at the end
            self.storage.check_writable(posixpath.dirname(self.recipe.export_path) or ".")
        note = compression_note(self.recipe.intermediate_format, self.recipe.intermediate_storage.compression)
        if note:
            log.emit(EventType.WARNING, message=note)
        for message in self.recipe.compat_warnings:  # DataJuicer keys accepted without effect
            log.emit(EventType.WARNING, message=message)
        self._executor(log, ops)  # workers start (and warm up) before the driver's planning threads run
        plan = self.plan = self._plan(log)
        with self._fold_lock:
            self.fold.seed({"partitions": [{"partition_id": p.partition_id, "sample_count": p.sample_count}
                                           for p in plan.partitions]})
        # After the input check (a refused resume changes nothing), before any worker writes.
        if self.summary["attempts"] > 1 and self.recipe.intermediate_storage.cleanup_temp_files:
            removed = retention.remove_temp_files(self.storage, self.paths, self.recipe.export_path)
            if removed:
                log.emit(EventType.INFO, message=f"removed {len(removed)} temp files an interrupted run left half-written",
                         removed=removed[:100])
        ends = stage_ends(ops)
        decisions: dict[int, Decision] = {}
        for stage, end in enumerate(ends):
            tasks = self._tasks(plan, ops, end, decisions, stage, len(ends))
            if end == len(ops) and can_stream(self.recipe.export_path) and not self.recipe.export_shard_size:
                self.streaming = StreamingExport(self.storage, result_store(tasks[0], self.storage),
                                                 [t.key(len(t.ops)) for t in tasks], self.recipe.export_path, self.job_id)
            self._run_stage(log, tasks)
            if end < len(ops):
                decisions[end] = decide(self.storage, log, tasks, self.paths.checkpoint_root)
        self._shutdown_executor()
        result = self._export(log, tasks)
        self._write_report(plan)
        outcome = self._finish(log, "completed", EventType.JOB_COMPLETE, "job completed", 0, export=result)
        retention.apply_at_end(self.storage, self.paths, self.recipe, "completed")
        return outcome

    def _run_stage(self, log: EventLog, tasks: list[PartitionTask]) -> None:
        """Run one stage's partitions (skipping those already done); raise on stop or failure."""
        skip, pending = plan_stage(tasks, set(self.storage.listdir(done_root(tasks[0]))))
        for task in skip:
            log.emit(EventType.PARTITION_SKIPPED, partition_id=task.partition.partition_id,
                     rows_in=task.partition.sample_count, rows_out=task.partition.output_samples, stage=task.stage,
                     stages=task.stages, message="already completed for this recipe")
            task.partition.status = "completed"
            self._result_ready(task)
        if len(pending) < len(tasks):
            log.emit(EventType.INFO, message=f"resuming: {len(tasks) - len(pending)} of {len(tasks)} partitions already done",
                     skipped=len(tasks) - len(pending), stage=tasks[0].stage)
        saved = keys_by_partition(self.storage.listdir(self.paths.checkpoint_root))  # once, not once per partition
        for task in pending:
            task.checkpoint_keys = frozenset(saved.get(task.partition.partition_id, ()))
        failed = self._schedule(log, pending)
        save_plan(self.storage, self.paths.mapping, self.plan)
        if self.stop_requested:
            raise JobStopped(f"job {self.job_id} stopped on request; resume with: {self.summary['resumption_command']}")
        if failed:
            self._write_report(self.plan)
            raise PartitionFailed(
                f"{len(failed)} of {len(tasks)} partitions failed after {self.recipe.retries} retries "
                f"(first: partition {failed[0][0]}: {failed[0][1]}); the other partitions are kept, "
                f"fix the cause and resume with: {self.summary['resumption_command']}")

    def _schedule(self, log: EventLog, pending: list[PartitionTask]) -> list[tuple[int, str]]:
        """Run tasks np at a time with retries; return (pid, error) of permanent failures."""
        r, rr = self.recipe, self.recipe.retry
        announced = False

        def should_stop() -> bool:
            nonlocal announced
            if not self.stop_requested and self.session.stop_file_requested():
                self.request_stop()
            if self.stop_requested and not announced:
                announced = True
                logger.warning("stop requested for job {}: checkpointing in-flight partitions", self.job_id)
            return self.stop_requested

        def tick() -> None:
            self.session.tick(time.time())
            if self.sampler.due(time.time()):
                self._sample_resources(log)

        policy = RetryPolicy(r.retries, r.backoff, rr.base_delay_s, rr.max_delay_s, rr.jitter)
        try:
            self._sample_resources(log)  # a baseline, so the next sample has a CPU rate
            return Scheduler(self._executor(log), r.np, policy, log.emit, should_stop, tick,
                             on_done=self._result_ready).run(pending)
        finally:
            self._sample_resources(log)  # before the pool goes: the workers' memory counts
            if self.stop_requested:
                self._shutdown_executor()

    def _sample_resources(self, log: EventLog) -> None:
        usage = self.sampler.sample()
        cpu = "" if usage["cpu_percent"] is None else f", CPU {usage['cpu_percent']:.0f}%"
        log.emit(EventType.RESOURCE_USAGE, message=f"{usage['processes']} processes, RSS {usage['rss_mb']:.0f} MB{cpu}",
                 scope="driver process tree (driver + local workers)", **usage)

    def _executor(self, log: EventLog, ops: Sequence[Any] = ()) -> Executor:
        """One pool (or Ray connection) per run, reused across stages."""
        if self.executor is None:
            self.executor = make_executor(self.recipe, log.write, ops)
            where = self.executor.describe()
            if where is not None:  # where the Ray cluster runs, for dj-stop and people
                self._update_summary(ray=where)
        return self.executor

    def _shutdown_executor(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(kill=self.stop_requested)
            self.executor = None

    def _result_ready(self, task: PartitionTask) -> None:
        if self.streaming is not None:  # made for the last stage only, so task holds a result
            self.streaming.mark_ready(task.key(len(task.ops)))

    def _close_streaming(self) -> None:
        if self.streaming is not None:
            self.streaming.close()  # what it appended stays, for the resume
            self.streaming = None

    def _export(self, log: EventLog, tasks: list[PartitionTask]) -> Optional[dict[str, Any]]:
        if not self.recipe.export_path:
            return None
        t0 = time.time()
        reused = 0
        if self.streaming is not None:
            reused = self.streaming.reused
            result, self.streaming = self.streaming.finish(self.recipe.export_stats), None
        elif self.recipe.export_shard_size:
            result = export_sharded(self.storage, result_store(tasks[0], self.storage), [t.key(len(t.ops)) for t in tasks],
                                    self.recipe.export_path, self.job_id, self.recipe.export_shard_size,
                                    self.recipe.export_stats)
        else:
            keys = [t.key(len(t.ops)) for t in tasks]
            result = export(self.storage, result_store(tasks[0], self.storage), keys, self.recipe.export_path,
                            self.job_id, self.recipe.export_stats)
        log.emit(EventType.INFO, message=f"exported {result['rows']} rows to {result['path']}",
                 export_path=result["path"], rows_out=result["rows"], duration_s=time.time() - t0,
                 appended_by_earlier_runs=reused)
        return result

    def _write_report(self, plan: Plan) -> None:
        report = {"job_id": self.job_id, "generated_at": time.time(), "total_samples": plan.total_samples,
                  "rejected_samples": plan.rejected_samples,
                  "output_samples": sum(p.output_samples or 0 for p in plan.partitions),
                  "partitions": [{"partition_id": p.partition_id, "input_samples": p.sample_count,
                                  "output_samples": p.output_samples, "status": p.status, "retries": p.retries,
                                  "start_time": p.start_time, "end_time": p.end_time,
                                  "duration_s": (p.end_time - p.start_time) if p.end_time and p.start_time else None,
                                  "error": p.error} for p in plan.partitions]}
        self.storage.put_bytes(self.paths.final_report, orjson.dumps(report, option=orjson.OPT_INDENT_2))

    def _finish(self, log: EventLog, status: str, event: EventType, message: str, code: int,
                trace: Optional[str] = None, export: Optional[dict] = None) -> JobOutcome:
        if self.plan is not None:
            save_plan(self.storage, self.paths.mapping, self.plan)
        fields: dict[str, Any] = {"message": message}
        if status == "failed":
            fields.update(error=message, stack_trace=trace)
        perf = None
        if "run_start_time" in self.summary:
            perf = self.run_metrics.result(self.summary["run_start_time"], time.time())
            perf["storage_retries"] += self.storage.retries  # the driver's own (plan, listings, export)
            log.emit(EventType.PERFORMANCE_METRIC, **perf, peak_rss_mb=round(self.sampler.peak_rss / 2**20, 1),
                     message=f"{perf['rows_per_s']:.0f} rows/s: {perf['rows_in']} rows in {perf['wall_s']:.2f} s "
                             f"({perf['partitions_processed']} partitions processed, {perf['partitions_skipped']} skipped)")
        log.emit(event, **fields)
        now = time.time()
        self._update_summary(status=status, end_time=now, duration_s=now - self.summary.get("start_time", now),
                             error=message if status != "completed" else None, exit_code=code,
                             export=export, progress=self.live_progress(), performance=perf,
                             event_log_degraded=log.degraded)
        if status != "completed":
            retention.apply_at_end(self.storage, self.paths, self.recipe, status)
        return JobOutcome(self.job_id, status, self.paths, export, None if status == "completed" else message, code)

    # ---- stopping ---------------------------------------------------------
    def request_stop(self) -> None:
        """Also the signal handler, so lock-free: tell running partitions at once, so they
        checkpoint at their very next op boundary instead of finishing the partition.
        The scheduler loop logs the stop and relays it to a Ray executor."""
        self.stop_requested = True
        if self.executor is not None and self.executor.stop_is_signal_safe:  # Ray's is an actor call
            self.executor.request_stop()


def run_job(recipe: Recipe, job_id: Optional[str] = None, config_path: Optional[str] = None,
            progress_port: Optional[int] = None, on_event: Optional[Callable[[dict], None]] = None,
            overrides: Sequence[str] = ()) -> JobOutcome:
    job_id = job_id or recipe.job_id or new_job_id(config_path)
    try:
        check_job_id(job_id)
    except ValueError as err:
        raise RecipeError(str(err)) from None
    return Driver(recipe, job_id, config_path, progress_port, on_event, overrides).run()
