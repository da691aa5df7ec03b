"""progress(events, plan): the one fold that the monitor, the stopper, the driver's
progress endpoint and the operator all read.

Totals come from the persisted partition plan, never from events seen so far;
failed partitions are counted; the ETA comes from the current run's completed
samples. Pure: pass `now` in."""
from __future__ import annotations

from typing import Any, Iterable, Optional

RUN_STARTS = {"JOB_START", "JOB_RESUMED"}
JOB_ENDS = {"JOB_COMPLETE": "completed", "JOB_FAILED": "failed", "JOB_STOPPED": "stopped"}


def _blank(sample_count: int) -> dict[str, Any]:
    return {"status": "pending", "samples": sample_count, "output_samples": None, "current_op": None,
            "ops_completed": 0, "checkpoints_saved": 0, "retries": 0, "error": None}


def progress(events: Iterable[dict[str, Any]], plan: Optional[dict[str, Any]], now: float) -> dict[str, Any]:
    fold = ProgressFold(plan)
    for ev in events:
        fold.add(ev)
    return fold.result(plan, now)


class ProgressFold:
    """The fold, one event at a time: a driver keeps one instead of every event it has seen
    (at 100k partitions that list would hold 1.7M events and take seconds to re-fold per poll).

    history=False keeps no per-op and per-checkpoint lists: only what `compact` reports."""

    def __init__(self, plan: Optional[dict[str, Any]] = None, history: bool = True):
        self.history = history
        self.parts: dict[int, dict[str, Any]] = {}
        self.ops: list[dict[str, Any]] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.checkpoint_count = 0
        self.last_checkpoint: Optional[dict[str, Any]] = None
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
            self.parts.setdefault(p["partition_id"], _blank(p["sample_count"]))["samples"] = p["sample_count"]

    def add(self, ev: dict[str, Any]) -> None:
        et, pid, ts = ev.get("event_type"), ev.get("partition_id"), ev.get("timestamp")
        self.job_id = self.job_id or ev.get("job_id")
        self.last_ts = ts or self.last_ts
        if et in self.latest:
            self.latest[et] = ev
            return
        if et in RUN_STARTS:
            self.status, self.run_start, self.run_done_samples = "running", ts, 0
            self.first_start = self.first_start or ts
            self.ended = set()
            for p in self.parts.values():  # an interrupted run's in-flight work restarts
                if p["status"] in ("processing", "failed"):
                    p["status"], p["current_op"] = "pending", None
            return
        if et in JOB_ENDS:
            self.status = JOB_ENDS[et]
            for p in self.parts.values():  # nothing runs once the driver has ended; a resume restarts them
                if p["status"] == "processing":
                    p["status"], p["current_op"] = "pending", None
            return
        if pid is None:
            return
        p = self.parts.setdefault(pid, _blank(ev.get("rows_in") or 0))
        if et in ("PARTITION_COMPLETE", "PARTITION_SKIPPED"):
            self.ended.add((pid, ev.get("stage") or 0))
        if et == "PARTITION_START":
            if (pid, ev.get("stage") or 0) in self.ended:
                return  # a worker's event that reached the log after the driver recorded the end
            p.update(status="processing", retries=max(p["retries"], ev.get("retry_count") or 0), error=None)
        elif et in ("PARTITION_COMPLETE", "PARTITION_SKIPPED") and \
                (ev.get("stage") or 0) < (ev.get("stages") or 1) - 1:
            p.update(current_op=None)  # an earlier stage (before a global deduplicator) is done
        elif et in ("PARTITION_COMPLETE", "PARTITION_SKIPPED"):
            if p["status"] != "completed" and et == "PARTITION_COMPLETE":
                self.run_done_samples += p["samples"]
            p.update(status="completed", current_op=None, output_samples=ev.get("rows_out", p["output_samples"]))
        elif et == "PARTITION_FAILED":
            p.update(status="failed" if ev.get("final") else "processing", error=ev.get("error"),
                     retries=max(p["retries"], ev.get("retry_count") or 0), current_op=None)
        elif et == "OP_START":
            if p["status"] != "completed":  # worker events may land after the driver's PARTITION_COMPLETE
                p["current_op"] = ev.get("op_name")
        elif et == "OP_COMPLETE":
            p["ops_completed"] = max(p["ops_completed"], (ev.get("op_idx") or 0) + 1)
            if self.history:
                rin, rout, dur = ev.get("rows_in") or 0, ev.get("rows_out") or 0, ev.get("duration_s") or 0.0
                self.ops.append({"partition_id": pid, "op_idx": ev.get("op_idx"), "op_name": ev.get("op_name"),
                                 "rows_in": rin, "rows_out": rout, "duration_s": dur,
                                 "throughput_rows_s": rin / dur if dur > 0 else None,
                                 "reduction_ratio": 1 - rout / rin if rin else 0.0})
        elif et == "CHECKPOINT_LOAD":
            p["ops_completed"] = max(p["ops_completed"], ev.get("reused_ops") or 0)
        elif et == "CHECKPOINT_SAVE":
            p["checkpoints_saved"] += 1
            self.checkpoint_count += 1
            self.last_checkpoint = {"partition_id": pid, "op_idx": ev.get("op_idx"), "op_name": ev.get("op_name"),
                                    "path": ev.get("checkpoint_path"), "time": ev.get("time"), "timestamp": ts}
            if self.history:
                self.checkpoints.append(self.last_checkpoint)

    def result(self, plan: Optional[dict[str, Any]], now: float) -> dict[str, Any]:
        """plan gives the totals; its partitions are taken by seed() (at creation, or once known)."""
        data = _overall(self.job_id, self.status, self.parts, self.ops, self.checkpoint_count, self.last_checkpoint,
                        self.first_start, self.run_start, self.last_ts, self.run_done_samples, plan, now)
        usage, perf = self.latest["RESOURCE_USAGE"], self.latest["PERFORMANCE_METRIC"]
        data["resource_usage"] = {k: usage.get(k) for k in RESOURCE_FIELDS} if usage else None
        data["performance"] = {k: perf.get(k) for k in PERFORMANCE_FIELDS} if perf else None  # the last finished run's
        return data


RESOURCE_FIELDS = ("time", "rss_mb", "peak_rss_mb", "cpu_percent", "processes", "system_available_mb")
PERFORMANCE_FIELDS = ("time", "wall_s", "rows_per_s", "rows_in", "rows_out", "partitions_processed",
                      "partitions_skipped", "op_time_s", "checkpoint_saves", "checkpoint_save_s", "retries", "peak_rss_mb")


def _overall(job_id, status, parts, ops, checkpoint_count, last_checkpoint, first_start, run_start, last_ts, run_done,
             plan, now):
    by = {s: sum(1 for p in parts.values() if p["status"] == s) for s in ("completed", "processing", "failed", "pending")}
    total = len(parts)
    total_samples = (plan or {}).get("total_samples", sum(p["samples"] for p in parts.values()))
    done_samples = sum(p["samples"] for p in parts.values() if p["status"] == "completed")
    end = now if status == "running" else (last_ts or now)
    eta = None
    if status == "running" and run_start and run_done > 0:
        rate = run_done / max(now - run_start, 1e-6)
        eta = max(total_samples - done_samples, 0) / rate
    percent = 100.0 * done_samples / total_samples if total_samples else (100.0 if status == "completed" else 0.0)
    return {
        "job_id": job_id,
        "overall_progress": {
            "job_status": status,
            "progress_percentage": round(percent, 2),
            "partitions": {**by, "total": total},
            "samples": {"processed": done_samples, "total": total_samples,
                        "output": sum(p["output_samples"] or 0 for p in parts.values() if p["status"] == "completed"),
                        "rejected": (plan or {}).get("rejected_samples", 0)},
            "elapsed_time_seconds": round(end - first_start, 3) if first_start else 0.0,
            "eta_seconds": round(eta, 1) if eta is not None else None,
        },
        "partition_status": {str(pid): p for pid, p in sorted(parts.items())},
        "operation_metrics": ops,
        "checkpoint_summary": {"total": checkpoint_count, "last": last_checkpoint,
                               "by_partition": {str(k): v["checkpoints_saved"] for k, v in sorted(parts.items())}},
    }


def compact(full: dict[str, Any]) -> dict[str, Any]:
    """The small JSON the driver serves on /progress and the operator mirrors into CR status."""
    o = full["overall_progress"]
    last = full["checkpoint_summary"]["last"] or {}
    return {
        "job_id": full["job_id"], "status": o["job_status"],
        "partitions": {"total": o["partitions"]["total"], "completed": o["partitions"]["completed"],
                       "failed": o["partitions"]["failed"], "running": o["partitions"]["processing"]},
        "samples": {"processed": o["samples"]["processed"], "total": o["samples"]["total"]},
        "progress_percent": o["progress_percentage"],
        "current_ops": {pid: p["current_op"] for pid, p in full["partition_status"].items() if p["current_op"]},
        "last_checkpoint": {"path": last.get("path"), "time": last.get("time")},
        "eta_seconds": o["eta_seconds"],
    }
