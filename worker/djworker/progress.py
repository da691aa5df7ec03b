"""Job progress as one typed fold: events (plus the plan, the report and the summary) -> `Progress`.

The monitor, the stopper's --list, the driver's /progress endpoint and the operator all
read it. Totals come from the persisted partition plan, never from the events seen so
far; failed partitions are counted; the ETA comes from the current run's completed
samples. Events can be lost (log rotation, `event_logging.enabled: false`), so the
driver's final_mapping_report.json and the job summary are ground truth too (`reconcile`).
Pure: the caller reads files and passes `now` in.

Over 300 lines: most of it is the pydantic models (`Progress`, `LiveProgress`), which are the
wire format dj-monitor --json, /progress and the operator read; the fold itself is ~150 lines."""
from __future__ import annotations

from typing import Any, Iterable, Optional

from pydantic import BaseModel

RUN_STARTS = {"JOB_START", "JOB_RESUMED"}
JOB_ENDS = {"JOB_COMPLETE": "completed", "JOB_FAILED": "failed", "JOB_STOPPED": "stopped"}
FINAL_STATES = frozenset({"completed", "failed", "stopped", "interrupted"})
RESOURCE_FIELDS = ("time", "rss_mb", "peak_rss_mb", "cpu_percent", "processes", "system_available_mb")
PERFORMANCE_FIELDS = ("time", "wall_s", "rows_per_s", "rows_in", "rows_out", "partitions_processed",
                      "partitions_skipped", "op_time_s", "checkpoint_saves", "checkpoint_save_s", "retries", "storage_retries",
                      "peak_rss_mb")


class PartitionProgress(BaseModel):
    status: str = "pending"  # pending | processing | completed | failed
    samples: int = 0
    output_samples: Optional[int] = None
    current_op: Optional[str] = None
    ops_completed: int = 0
    checkpoints_saved: int = 0
    retries: int = 0
    error: Optional[str] = None
    start_time: Optional[float] = None  # its latest start
    end_time: Optional[float] = None  # when it completed, or failed for good


class PartitionCounts(BaseModel):
    completed: int = 0
    processing: int = 0
    failed: int = 0
    pending: int = 0
    total: int = 0


class SampleCounts(BaseModel):
    processed: int = 0
    total: int = 0
    output: int = 0
    rejected: int = 0


class OverallProgress(BaseModel):
    job_status: str = "pending"  # pending | running | completed | failed | stopped | interrupted
    progress_percentage: float = 0.0
    partitions: PartitionCounts = PartitionCounts()
    samples: SampleCounts = SampleCounts()
    elapsed_time_seconds: float = 0.0
    eta_seconds: Optional[float] = None


class OpMetric(BaseModel):
    partition_id: int
    op_idx: Optional[int] = None
    op_name: Optional[str] = None
    rows_in: int = 0
    rows_out: int = 0
    duration_s: float = 0.0
    throughput_rows_s: Optional[float] = None
    reduction_ratio: float = 0.0


class OpSummary(BaseModel):
    op_idx: Optional[int] = None
    op_name: Optional[str] = None
    partitions: int = 0
    rows_in: int = 0
    rows_out: int = 0
    duration_s: float = 0.0
    throughput_rows_s: Optional[float] = None
    reduction_ratio: float = 0.0


class CheckpointRecord(BaseModel):
    partition_id: int
    op_idx: Optional[int] = None
    op_name: Optional[str] = None
    path: Optional[str] = None
    time: Optional[str] = None
    timestamp: Optional[float] = None


class CheckpointSummary(BaseModel):
    total: int = 0
    last: Optional[CheckpointRecord] = None
    by_partition: dict[str, int] = {}
    saved: list[CheckpointRecord] = []  # every save, per (partition, op), with its time; in detail only


class Progress(BaseModel):
    """What a job has done, as the monitor shows it (`dj-monitor --json` prints this)."""

    job_id: Optional[str] = None
    overall_progress: OverallProgress = OverallProgress()
    partition_status: dict[str, PartitionProgress] = {}
    operation_metrics: list[OpMetric] = []
    operation_summary: list[OpSummary] = []
    checkpoint_summary: CheckpointSummary = CheckpointSummary()
    resource_usage: Optional[dict[str, Any]] = None
    performance: Optional[dict[str, Any]] = None  # the last finished run's PERFORMANCE_METRIC


class LivePartitions(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0
    running: int = 0


class LiveSamples(BaseModel):
    processed: int = 0
    total: int = 0


class LastCheckpoint(BaseModel):
    path: Optional[str] = None
    time: Optional[str] = None


class LiveProgress(BaseModel):
    """The small JSON the driver serves on /progress and the operator mirrors into the CR status
    (operator/djoperator/progress.py parses it; tests/worker/test_progress.py pins the two together)."""

    job_id: Optional[str] = None
    status: str = "pending"
    partitions: LivePartitions = LivePartitions()
    samples: LiveSamples = LiveSamples()
    progress_percent: float = 0.0
    current_ops: dict[str, str] = {}
    last_checkpoint: LastCheckpoint = LastCheckpoint()
    eta_seconds: Optional[float] = None


def progress(events: Iterable[dict[str, Any]], plan: Optional[dict[str, Any]], now: float) -> Progress:
    fold = ProgressFold(plan)
    for ev in events:
        fold.add(ev)
    return fold.result(plan, now)


class ProgressFold:
    """The fold, one event at a time: a driver keeps one instead of every event it has seen
    (at 100k partitions that list would hold 1.7M events and take seconds to re-fold per poll).

    history=False keeps no per-op and per-checkpoint lists: only what `live` reports."""

    def __init__(self, plan: Optional[dict[str, Any]] = None, history: bool = True):
        self.history = history
        self.parts: dict[int, PartitionProgress] = {}
        self.ops: list[OpMetric] = []
        self.checkpoints: list[CheckpointRecord] = []
        self.checkpoint_count = 0
        self.last_checkpoint: Optional[CheckpointRecord] = None
        self.job_id: Optional[str] = None
        self.status = "pending"
        self.first_start: Optional[float] = None
        self.run_start: Optional[float] = None
        self.last_ts: Optional[float] = None
        self.run_done_samples = 0
        self.ended: set[tuple[int, int]] = set()  # (partition, stage) completed or skipped in the current run
        self.latest: dict[str, Optional[dict[str, Any]]] = {"RESOURCE_USAGE": None, "PERFORMANCE_METRIC": None}
        self.seed(plan)

    def seed(self, plan: Optional[dict[str, Any]]) -> None:
        """Partitions and their sizes from the plan: totals never depend on the events seen so far."""
        for p in (plan or {}).get("partitions", []):
            self.parts.setdefault(p["partition_id"], PartitionProgress()).samples = p["sample_count"]

    def add(self, ev: dict[str, Any]) -> None:
        et, pid, ts = ev.get("event_type"), ev.get("partition_id"), ev.get("timestamp")
        self.job_id = self.job_id or ev.get("job_id")
        self.last_ts = ts or self.last_ts
        if et in self.latest:
            self.latest[et] = ev
        elif et in RUN_STARTS:
            self.status, self.run_start, self.run_done_samples = "running", ts, 0
            self.first_start = self.first_start or ts
            self.ended = set()
            self._restart(("processing", "failed"))  # an interrupted run's in-flight work restarts
        elif et in JOB_ENDS:
            self.status = JOB_ENDS[et]
            self._restart(("processing",))  # nothing runs once the driver has ended; a resume restarts them
        elif pid is not None:
            self._add_partition_event(et, pid, ts, ev)

    def seed_outcomes(self, report: Optional[dict[str, Any]]) -> None:
        """Outcomes an earlier run recorded in final_mapping_report.json that its events no longer
        show (event logging off, or rotated away): a skipped partition keeps its output count."""
        for entry in (report or {}).get("partitions", []):
            p = self.parts.setdefault(entry["partition_id"], PartitionProgress(samples=entry.get("input_samples") or 0))
            if entry.get("status") == "completed" and p.status != "completed":
                p.status, p.output_samples = "completed", entry.get("output_samples")
                p.start_time, p.end_time = entry.get("start_time"), entry.get("end_time")

    def output_rows(self, pid: int) -> Optional[int]:
        """A completed partition's output rows as last recorded (None if no run recorded them)."""
        p = self.parts.get(pid)
        return p.output_samples if p is not None else None

    def _restart(self, statuses: tuple[str, ...]) -> None:
        for p in self.parts.values():
            if p.status in statuses:
                p.status, p.current_op = "pending", None

    def _add_partition_event(self, et: Optional[str], pid: int, ts: Optional[float], ev: dict[str, Any]) -> None:
        p = self.parts.setdefault(pid, PartitionProgress(samples=ev.get("rows_in") or 0))
        stage, last_stage = ev.get("stage") or 0, (ev.get("stages") or 1) - 1
        if et in ("PARTITION_COMPLETE", "PARTITION_SKIPPED"):
            self.ended.add((pid, stage))
            if stage < last_stage:
                p.current_op = None  # an earlier stage (before a global deduplicator) is done
                return
            if p.status != "completed" and et == "PARTITION_COMPLETE":
                self.run_done_samples += p.samples
            p.status, p.current_op = "completed", None
            p.output_samples = ev.get("rows_out", p.output_samples)
            if et == "PARTITION_COMPLETE":
                p.end_time = ts
        elif et == "PARTITION_START":
            if (pid, stage) in self.ended:
                return  # a worker's event that reached the log after the driver recorded the end
            p.status, p.retries, p.error = "processing", max(p.retries, ev.get("retry_count") or 0), None
            p.start_time, p.end_time = ts, None
        elif et == "PARTITION_FAILED":
            p.status = "failed" if ev.get("final") else "processing"
            p.end_time = ts if ev.get("final") else None
            p.error, p.retries, p.current_op = ev.get("error"), max(p.retries, ev.get("retry_count") or 0), None
        elif et == "OP_START":
            if p.status != "completed":  # worker events may land after the driver's PARTITION_COMPLETE
                p.current_op = ev.get("op_name")
        elif et == "OP_COMPLETE":
            p.ops_completed = max(p.ops_completed, (ev.get("op_idx") or 0) + 1)
            if self.history:
                self.ops.append(_op_metric(pid, ev))
        elif et == "CHECKPOINT_LOAD":
            p.ops_completed = max(p.ops_completed, ev.get("reused_ops") or 0)
        elif et == "CHECKPOINT_SAVE":
            p.checkpoints_saved += 1
            self.checkpoint_count += 1
            self.last_checkpoint = CheckpointRecord(partition_id=pid, op_idx=ev.get("op_idx"), op_name=ev.get("op_name"),
                                                    path=ev.get("checkpoint_path"), time=ev.get("time"), timestamp=ts)
            if self.history:
                self.checkpoints.append(self.last_checkpoint)

    def result(self, plan: Optional[dict[str, Any]], now: float) -> Progress:
        """plan gives the totals; its partitions are taken by seed() (at creation, or once known)."""
        parts = {pid: p.model_copy() for pid, p in sorted(self.parts.items())}
        usage, perf = self.latest["RESOURCE_USAGE"], self.latest["PERFORMANCE_METRIC"]
        data = Progress(
            job_id=self.job_id,
            partition_status={str(pid): p for pid, p in parts.items()},
            operation_metrics=list(self.ops),
            operation_summary=operation_summary(self.ops),
            checkpoint_summary=CheckpointSummary(total=self.checkpoint_count, last=self.last_checkpoint,
                                                 saved=list(self.checkpoints)),
            resource_usage={k: usage.get(k) for k in RESOURCE_FIELDS} if usage else None,
            performance={k: perf.get(k) for k in PERFORMANCE_FIELDS} if perf else None)
        return overall(data, self.status, self.first_start, self.run_start, self.last_ts, self.run_done_samples,
                       plan, now)


def _op_metric(pid: int, ev: dict[str, Any]) -> OpMetric:
    rin, rout, dur = ev.get("rows_in") or 0, ev.get("rows_out") or 0, ev.get("duration_s") or 0.0
    return OpMetric(partition_id=pid, op_idx=ev.get("op_idx"), op_name=ev.get("op_name"), rows_in=rin, rows_out=rout,
                    duration_s=dur, throughput_rows_s=rin / dur if dur > 0 else None,
                    reduction_ratio=1 - rout / rin if rin else 0.0)


def overall(data: Progress, status: str, first_start: Optional[float], run_start: Optional[float],
            last_ts: Optional[float], run_done: int, plan: Optional[dict[str, Any]], now: float) -> Progress:
    """Fills the totals, percentage and ETA from the per-partition states (in place; returns data)."""
    parts = data.partition_status.values()
    counts = PartitionCounts(total=len(data.partition_status),
                             **{s: sum(1 for p in parts if p.status == s)
                                for s in ("completed", "processing", "failed", "pending")})
    total_samples = (plan or {}).get("total_samples", sum(p.samples for p in parts))
    done_samples = sum(p.samples for p in parts if p.status == "completed")
    end = now if status == "running" else (last_ts or now)
    eta = None
    if status == "running" and run_start and run_done > 0:
        eta = max(total_samples - done_samples, 0) / (run_done / max(now - run_start, 1e-6))
    percent = 100.0 * done_samples / total_samples if total_samples else (100.0 if status == "completed" else 0.0)
    data.overall_progress = OverallProgress(
        job_status=status, progress_percentage=round(percent, 2), partitions=counts,
        samples=SampleCounts(processed=done_samples, total=total_samples, rejected=(plan or {}).get("rejected_samples", 0),
                             output=sum(p.output_samples or 0 for p in parts if p.status == "completed")),
        elapsed_time_seconds=round(end - first_start, 3) if first_start else 0.0,
        eta_seconds=round(eta, 1) if eta is not None else None)
    data.checkpoint_summary.by_partition = {k: p.checkpoints_saved for k, p in data.partition_status.items()}
    return data


def reconcile(data: Progress, plan: Optional[dict[str, Any]], now: float, summary_status: Optional[str] = None,
              start_time: Optional[float] = None, end_time: Optional[float] = None,
              report: Optional[dict[str, Any]] = None, driver_dead: bool = False) -> Progress:
    """The event fold corrected by what survives the events: the summary's status (event logging off,
    or the run's start rotated away), the report's per-partition outcomes, and a driver that
    verifiably died without an end event (`interrupted`: nothing runs; it resumes from checkpoints)."""
    o = data.overall_progress
    status = o.job_status
    if status == "pending" and summary_status:
        status = summary_status
    if status == "running" and driver_dead:
        status = "interrupted"
    for entry in (report or {}).get("partitions", []):
        p = data.partition_status.setdefault(str(entry["partition_id"]),
                                             PartitionProgress(samples=entry.get("input_samples") or 0))
        if entry.get("status") == "completed" and p.status != "completed":
            p.status, p.current_op, p.output_samples = "completed", None, entry.get("output_samples")
        elif entry.get("status") == "failed" and p.status == "pending":
            p.status, p.error = "failed", entry.get("error")
    if status == "completed":  # a completed job completed every partition, whatever events were lost
        for p in data.partition_status.values():
            p.status, p.current_op = "completed", None
    if status != "running":
        for p in data.partition_status.values():
            if p.status == "processing":
                p.status, p.current_op = "pending", None
    elapsed = o.elapsed_time_seconds
    if not elapsed and start_time:  # the run's start rotated away, or was never logged
        elapsed = round((now if status == "running" else (end_time or now)) - start_time, 3)
    eta = o.eta_seconds if status == "running" else None
    data = overall(data, status, None, None, None, 0, plan, now)
    data.overall_progress.elapsed_time_seconds, data.overall_progress.eta_seconds = elapsed, eta
    return data


def operation_summary(metrics: Iterable[OpMetric]) -> list[OpSummary]:
    """Per-op totals over partitions, counting each (partition, op) once: its latest attempt."""
    latest = {(m.partition_id, m.op_idx): m for m in metrics}
    by_op: dict[tuple[Optional[int], Optional[str]], OpSummary] = {}
    for m in latest.values():
        agg = by_op.setdefault((m.op_idx, m.op_name), OpSummary(op_idx=m.op_idx, op_name=m.op_name))
        agg.partitions += 1
        agg.rows_in += m.rows_in
        agg.rows_out += m.rows_out
        agg.duration_s += m.duration_s
    out = []
    for _, agg in sorted(by_op.items(), key=lambda kv: (kv[0][0] is None, kv[0][0] or 0)):
        dur, rin = agg.duration_s, agg.rows_in
        out.append(agg.model_copy(update={"duration_s": round(dur, 4),
                                          "throughput_rows_s": round(rin / dur, 1) if dur > 0 else None,
                                          "reduction_ratio": round(1 - agg.rows_out / rin, 4) if rin else 0.0}))
    return out


def live(full: Progress) -> LiveProgress:
    """The compact view of `full` that /progress serves and job_summary.json keeps."""
    o = full.overall_progress
    last = full.checkpoint_summary.last
    return LiveProgress(
        job_id=full.job_id, status=o.job_status,
        partitions=LivePartitions(total=o.partitions.total, completed=o.partitions.completed,
                                  failed=o.partitions.failed, running=o.partitions.processing),
        samples=LiveSamples(processed=o.samples.processed, total=o.samples.total),
        progress_percent=o.progress_percentage,
        current_ops={pid: p.current_op for pid, p in full.partition_status.items() if p.current_op},
        last_checkpoint=LastCheckpoint(path=last.path, time=last.time) if last else LastCheckpoint(),
        eta_seconds=o.eta_seconds)


def compact(full: Progress) -> dict[str, Any]:
    """`live(full)` as the JSON dict the endpoint serves."""
    return live(full).model_dump()
