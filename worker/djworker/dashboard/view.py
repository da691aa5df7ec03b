"""What the dashboard shows, from the monitor's progress data and the job's events. Pure: pass `now`.

The partition states, sample counts, ETA and per-op totals come from the one progress fold
(`jobs.monitor.job_progress`); this module only adds what the fold does not keep: time
series (throughput, RSS, CPU), the latest problems, per-op checkpoint cost and which
partitions were skipped or are being retried."""
from __future__ import annotations

from typing import Any, Iterable, Optional

MAX_POINTS = 240  # chart points: enough for a smooth line, small enough to poll every 2 s
MAX_PROBLEMS = 20
PROBLEM_TYPES = {"WARNING", "JOB_FAILED", "PARTITION_FAILED", "OP_FAILED", "PROCESSING_ERROR", "CHECKPOINT_INVALID"}
# Grid states, in the order the page's legend shows them; the grid is sent as one letter per partition.
STATES = {"pending": "p", "running": "r", "retrying": "y", "done": "d", "skipped": "s", "failed": "f"}


class Timeline:
    """One pass over the events for what the progress fold does not keep."""

    def __init__(self) -> None:
        self.completions: list[tuple[float, int]] = []  # (timestamp, rows read) of each first-stage completion
        self.resources: list[dict[str, Any]] = []
        self.problems: list[dict[str, Any]] = []
        self.skipped: set[int] = set()
        self.last_checkpoint: dict[int, dict[str, Any]] = {}
        self.checkpoint_cost: dict[str, dict[str, float]] = {}

    def add(self, ev: dict[str, Any]) -> None:
        et, pid, ts = ev.get("event_type"), ev.get("partition_id"), ev.get("timestamp") or 0.0
        if et == "PARTITION_COMPLETE":
            if not ev.get("stage"):
                self.completions.append((ts, ev.get("rows_in") or 0))
            self.skipped.discard(pid)
        elif et == "PARTITION_SKIPPED":
            self.skipped.add(pid)
        elif et == "RESOURCE_USAGE":
            self.resources.append({"t": ts, "rss_mb": ev.get("rss_mb"), "cpu_percent": ev.get("cpu_percent")})
        elif et == "CHECKPOINT_SAVE":
            cost = self.checkpoint_cost.setdefault(ev.get("op_name") or "?", {"saves": 0, "seconds": 0.0})
            cost["saves"] += 1
            cost["seconds"] += ev.get("duration_s") or 0.0
            if pid is not None:
                self.last_checkpoint[pid] = {"op": ev.get("op_name"), "op_idx": ev.get("op_idx"), "time": ev.get("time")}
        if et in PROBLEM_TYPES:
            self.problems.append({k: ev.get(k) for k in ("time", "timestamp", "event_type", "partition_id", "op_name",
                                                          "retry_count", "message", "error")})
            del self.problems[:-MAX_PROBLEMS]


def timeline(events: Iterable[dict[str, Any]]) -> Timeline:
    t = Timeline()
    for ev in events:
        t.add(ev)
    return t


def throughput_series(completions: list[tuple[float, int]], max_points: int = MAX_POINTS) -> list[list[float]]:
    """Rows read per second, in equal time buckets from the first to the last completion."""
    if not completions:
        return []
    start, end = min(t for t, _ in completions), max(t for t, _ in completions)
    width = max((end - start) / max_points, 1.0)
    buckets: dict[int, int] = {}
    for ts, rows in completions:
        buckets[int((ts - start) // width)] = buckets.get(int((ts - start) // width), 0) + rows
    last = max(buckets)
    return [[round(start + (i + 1) * width, 3), round(buckets.get(i, 0) / width, 1)] for i in range(last + 1)]


def _thin(points: list[dict[str, Any]], max_points: int = MAX_POINTS) -> list[dict[str, Any]]:
    step = max(1, -(-len(points) // max_points))
    return points[::step] if step > 1 else points


def grid_state(p: dict[str, Any], skipped: bool) -> str:
    status = p["status"]
    if status == "completed":
        return "skipped" if skipped else "done"
    if status == "processing":
        return "retrying" if p["retries"] else "running"
    return status if status in STATES else "pending"


def dashboard(data: dict[str, Any], tl: Timeline, now: float) -> dict[str, Any]:
    """The page's JSON. `data` is `jobs.monitor.job_progress(..., detailed=True)` for the job."""
    o, v = data["overall_progress"], data["job_overview"]
    parts = data["partition_status"]
    ids = [int(k) for k in parts]
    states, tips = [], []
    for pid in ids:
        p = parts[str(pid)]
        states.append(STATES[grid_state(p, pid in tl.skipped)])
        ck = tl.last_checkpoint.get(pid)
        tips.append([p["samples"], p["output_samples"], p["retries"], p["current_op"],
                     f"after {ck['op']} at {ck['time']}" if ck else None, p["error"]])
    ops = []
    for op in data["operation_summary"]:
        cost = tl.checkpoint_cost.get(op["op_name"] or "?", {"saves": 0, "seconds": 0.0})
        ops.append({"op_idx": op["op_idx"], "op_name": op["op_name"], "partitions": op["partitions"],
                    "rows_in": op["rows_in"], "rows_out": op["rows_out"], "duration_s": op["duration_s"],
                    "drop_rate": op["reduction_ratio"], "is_filter": _is_filter(op["op_name"]),
                    "checkpoint_saves": int(cost["saves"]), "checkpoint_s": round(cost["seconds"], 3)})
    status = o["job_status"]
    return {
        "job_id": data["job_id"], "status": status, "attempt": v.get("attempts") or 1,
        "elapsed_s": o["elapsed_time_seconds"], "eta_s": o["eta_seconds"],
        "progress_percent": o["progress_percentage"], "partitions": o["partitions"], "samples": o["samples"],
        "grid": {"ids": ids, "states": "".join(states), "tips": tips,
                 "legend": list(STATES), "codes": STATES},
        "ops": ops,
        "funnel": funnel(ops, data.get("operation_metrics") or [], parts),
        "throughput": throughput_series(tl.completions),
        "resources": [[r["t"], r["rss_mb"], r["cpu_percent"]] for r in _thin(tl.resources)],
        "resource_now": data.get("resource_usage"),
        "performance": data.get("performance"),
        "problems": list(reversed(tl.problems)),
        "locations": {"job_dir": v.get("job_dir"), "event_log_dir": v.get("event_log_dir"),
                      "checkpoint_dir": v.get("checkpoint_dir"), "export_path": v.get("export_path"),
                      "dataset_path": v.get("dataset_path")},
        "resume_command": v.get("resumption_command") if status in ("failed", "stopped", "interrupted") else None,
        "resumption_command": v.get("resumption_command"),
        "driver": v.get("driver"), "error": v.get("error"),
        "last_checkpoint": data["checkpoint_summary"]["last"],
        "checkpoints_total": data["checkpoint_summary"]["total"],
        "generated_at": now,
    }


def funnel(ops: list[dict[str, Any]], metrics: list[dict[str, Any]],
           parts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in, then the rows left after each op, over the completed partitions only: mid-run a
    partition still inside the ops would make a later op look like it dropped rows."""
    done = {int(k) for k, p in parts.items() if p["status"] == "completed"}
    latest = {(m["partition_id"], m["op_idx"]): m for m in metrics if m["partition_id"] in done}
    rows_in = sum(m["rows_in"] for (_, idx), m in latest.items() if idx == ops[0]["op_idx"]) if ops else 0
    steps = [{"label": "input", "rows": rows_in}]
    for op in ops:
        steps.append({"label": op["op_name"],
                      "rows": sum(m["rows_out"] for (_, idx), m in latest.items() if idx == op["op_idx"])})
    return steps


def _is_filter(name: Optional[str]) -> bool:
    return bool(name) and (name.endswith(("_filter", "_selector")) or "deduplicator" in name)
