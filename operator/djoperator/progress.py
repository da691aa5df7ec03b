"""What the status reports about a running job: progress sections and conditions.    [pure]"""
from __future__ import annotations

from typing import Any, Optional

from . import children
from .crd import ACTIVE, FAILED, STOPPED, SUCCEEDED, Status
from .observed import Observed, seconds_since, timestamp
from .settings import Settings


def mirror_progress(o: Observed, st: Status) -> None:
    """Copies the driver's /progress into st (in place), changing nothing when nothing changed;
    a failed poll only records since when the driver has been unreachable."""
    if o.progress is None:
        if o.progress_polled:
            st.progress = {**(st.progress or {}), "unreachableSince": (st.progress or {}).get("unreachableSince")
                           or timestamp(o.now)}
        return
    fields = progress_fields(o.progress)
    if fields is None:
        return
    body = {k: v for k, v in (st.progress or {}).items() if k not in ("updatedAt", "unreachableSince")}
    changed = (body != fields["progress"] or st.partitions != fields["partitions"]
               or st.samples != fields["samples"])
    st.partitions, st.samples = fields["partitions"], fields["samples"]
    st.progress = {**fields["progress"], "updatedAt": timestamp(o.now) if changed
                   else (st.progress or {}).get("updatedAt", timestamp(o.now))}
    st.checkpoint = {**(st.checkpoint or {}), **fields["checkpoint"]}


def mirror_final(st: Status, raw: dict[str, Any]) -> None:
    """A finished driver's last progress (from its termination message) into st, in place."""
    fields = progress_fields(raw)
    if fields is None or not fields["partitions"]["total"]:
        return
    st.partitions, st.samples = fields["partitions"], fields["samples"]
    st.progress = {**(st.progress or {}), **fields["progress"]}
    st.checkpoint = {**(st.checkpoint or {}), **fields["checkpoint"]}


def progress_fields(raw: dict[str, Any]) -> Optional[dict[str, dict[str, Any]]]:
    """The driver's /progress JSON as status sections; None if it is malformed."""
    try:
        parts, samples = raw.get("partitions") or {}, raw.get("samples") or {}
        partitions = {k: int(parts.get(k) or 0) for k in ("total", "completed", "failed", "running")}
        progress: dict[str, Any] = {
            "percent": round(float(raw.get("progress_percent") or 0.0), 1),
            "partitionsDone": f"{partitions['completed']}/{partitions['total']}",
            "currentOps": [{"partition": str(k), "op": str(v)}
                           for k, v in sorted((raw.get("current_ops") or {}).items(), key=lambda kv: str(kv[0]))],
        }
        if raw.get("eta_seconds") is not None:
            progress["etaSeconds"] = int(round(float(raw["eta_seconds"])))
        checkpoint: dict[str, Any] = {}
        last = raw.get("last_checkpoint") or {}
        if last.get("path"):
            checkpoint = {"lastCheckpointPath": str(last["path"]), "lastCheckpointTime": str(last.get("time") or "")}
        return {"partitions": partitions,
                "samples": {k: int(samples.get(k) or 0) for k in ("processed", "total")},
                "progress": progress, "checkpoint": checkpoint}
    except (TypeError, ValueError, AttributeError):
        return None


def conditions(o: Observed, st: Status, settings: Settings) -> list[dict[str, Any]]:
    """The standard conditions, each keeping its lastTransitionTime while its status holds."""
    spec = o.spec
    assert spec is not None
    driver = o.pod(children.names(o.name, st.attempt).driver)
    if not spec.is_ray:
        cluster = ("True", "NotRequired", f"executor {spec.executor_type} runs in the driver pod")
    elif o.cluster is not None and o.cluster.is_ready:
        cluster = ("True", "RayClusterReady", f"RayCluster {o.cluster.name} is ready")
    else:
        cluster = ("False", "RayClusterNotReady" if o.cluster else "NoRayCluster",
                   f"RayCluster state: {o.cluster.state if o.cluster else 'absent'}")
    running = driver is not None and driver.phase == "Running" and not driver.deleting
    driver_c = ("True", "PodRunning", f"driver {driver.name} is running") if running else (
        "False", f"Pod{driver.phase}" if driver else "NoDriver", f"driver phase: {driver.phase if driver else 'none'}")
    unreachable = seconds_since((st.progress or {}).get("unreachableSince"), o.now)
    if st.phase in ACTIVE and (st.progress or {}).get("unreachableSince") and unreachable > settings.progress_grace_seconds:
        progressing = ("False", "ProgressUnreachable", f"the driver's /progress has not answered for {unreachable:.0f}s")
    elif st.phase in ACTIVE:
        progressing = ("True", st.reason or st.phase, st.message or "")
    else:
        progressing = ("False", st.reason or str(st.phase), st.message or "")
    table = {
        "ClusterReady": cluster,
        "DriverRunning": driver_c,
        "Progressing": progressing,
        "Stopped": ("True", "Stopped", st.message or "") if st.phase == STOPPED else ("False", "NotStopped", ""),
        "Complete": ("True", "Completed", st.message or "") if st.phase == SUCCEEDED else ("False", "NotComplete", ""),
        "Failed": ("True", st.reason or "Failed", st.message or "") if st.phase == FAILED else ("False", "NotFailed", ""),
    }
    old = {c.get("type"): c for c in (o.status.conditions or [])}
    out = []
    for kind, (value, reason, message) in table.items():
        before = old.get(kind) or {}
        since = before.get("lastTransitionTime") if before.get("status") == value else None
        out.append({"type": kind, "status": value, "reason": reason, "message": message,
                    "lastTransitionTime": since or timestamp(o.now), "observedGeneration": o.generation})
    return out
