"""Reads a job's world into an Observed: the CR, its children, the driver's /progress."""
from __future__ import annotations

import json
import logging
import secrets
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any, Mapping, Optional, Sequence

from . import children, crd
from .kube import RAY_API_VERSION, Kube
from .settings import Settings
from .observed import ClusterState, Observed, PodState, scrub

log = logging.getLogger(__name__)


def job(kube: Kube, body: Mapping[str, Any], settings: Settings, now: datetime,
        with_progress: bool = True) -> Observed:
    """Everything next_status needs. The CR is re-read, not taken from the event that
    triggered us, so a timer and a spec change in a row see each other's status; if it
    cannot be read (kube.JobGone, kube.APIUnavailable) nothing is decided."""
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    fresh = kube.get_job(namespace, name)
    spec, spec_error, unknown = None, None, []
    try:
        spec, unknown = crd.parse_spec_lenient(fresh.get("spec"))
    except crd.SpecError as err:
        spec_error = str(err)
    status = crd.parse_status(fresh.get("status"))
    selector = f"{children.LABEL_JOB_UID}={uid}"

    all_pods = kube.list("v1", "Pod", namespace, selector)
    raw_pods = [p for p in all_pods if p["metadata"].get("labels", {}).get(children.LABEL_COMPONENT) == "driver"]
    present = frozenset((kind, obj["metadata"]["name"])
                        for kind in ("ConfigMap", "PersistentVolumeClaim", "Service")
                        for obj in kube.list("v1", kind, namespace, selector))
    # The Ray auth Secret is never read (the operator holds no read access to Secrets): it
    # counts as present unless a pod of the job says it is not found.
    auth = children.names(name, 0).ray_auth
    if not any(f'secret "{auth}" not found' in (why_blocked(p.get("status") or {}) or "") for p in all_pods):
        present |= {("Secret", auth)}
    cluster_name = children.names(name, 0).ray
    cluster = cluster_state(kube.get(RAY_API_VERSION, "RayCluster", namespace, cluster_name), uid)

    progress, polled = None, False
    current = children.names(name, max(status.attempt, 1)).driver
    driver = next((p for p in raw_pods if p["metadata"]["name"] == current), None)
    if with_progress and driver is not None and pod_state(driver).phase == "Running":
        progress, polled = fetch_progress(driver, settings), True
    return Observed(
        name=name, namespace=namespace, uid=uid, now=now, spec=spec, spec_error=spec_error,
        spec_warnings=tuple(unknown), status=status,
        generation=int(fresh.get("metadata", {}).get("generation") or 1),
        pods=tuple(pod_state(p, kube.pod_warnings(namespace, p["metadata"]["name"])
                             if (p.get("status") or {}).get("phase", "Pending") == "Pending" else ())
                   for p in raw_pods),
        cluster=cluster, present=present,
        progress=progress, progress_polled=polled, new_token=secrets.token_hex(32),
    )


def pod_state(pod: Mapping[str, Any], warnings: Sequence[str] = ()) -> PodState:
    """`warnings`: the pod's Warning events, newest last (FailedMount, FailedScheduling, ...)."""
    meta, st = pod["metadata"], pod.get("status") or {}
    exit_code, message, final = None, None, None
    for container in st.get("containerStatuses") or []:
        if container.get("name") == "driver":
            terminated = (container.get("state") or {}).get("terminated")
            if terminated is not None:
                exit_code = terminated.get("exitCode")
                message, final = termination_message(terminated)
    attempt = int(meta.get("labels", {}).get(children.LABEL_ATTEMPT, "0") or 0)
    deleted_at = meta.get("deletionTimestamp")
    return PodState(name=meta["name"], attempt=attempt, phase=st.get("phase") or "Pending",
                    exit_code=exit_code, deleting=bool(deleted_at), message=message,
                    deletion_deadline=_time(deleted_at), blocked=why_blocked(st, warnings),
                    final_progress=final)


def termination_message(terminated: Mapping[str, Any]) -> tuple[Optional[str], Optional[dict[str, Any]]]:
    """(reason, final progress) from a terminated driver container. dj-process writes one
    JSON line; a driver that died before writing it leaves the kubelet's log tail
    (FallbackToLogsOnError), whose last line is the likeliest cause."""
    text = (terminated.get("message") or "").strip()
    reason = terminated.get("reason")
    lines = text.splitlines()
    if lines:
        try:
            data = json.loads(lines[-1])
        except ValueError:
            data = None
        if isinstance(data, dict) and "exit_code" in data:
            progress = data.get("progress") if isinstance(data.get("progress"), dict) else None
            return (scrub(str(data["reason"])) if data.get("reason") else None), progress
        return scrub(lines[-1]), None
    return (reason if reason not in (None, "Error", "Completed") else None), None


# Waiting reasons that are ordinary steps of a start, not problems.
STARTING = frozenset({"ContainerCreating", "PodInitializing"})


def why_blocked(st: Mapping[str, Any], warnings: Sequence[str] = ()) -> Optional[str]:
    """What kubelet or the scheduler says keeps a Pending pod from starting, if anything.
    ContainerCreating is a normal step, unless Warning events (a volume that cannot be
    mounted: a misspelt ConfigMap, a deleted Secret) say it will never end."""
    for container in st.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] not in STARTING:
            return f"{waiting['reason']}: {waiting.get('message') or ''}".strip().rstrip(":")[:300]
    for cond in st.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"{cond.get('reason') or 'Unschedulable'}: {cond.get('message') or ''}".strip().rstrip(":")[:300]
    if warnings:
        return scrub(warnings[-1])
    return None


def _time(value: Any) -> Optional[datetime]:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def cluster_state(cluster: Optional[Mapping[str, Any]], uid: str) -> Optional[ClusterState]:
    """KubeRay reports readiness as status.state == "ready"; a same-named cluster that
    this job does not own is marked foreign (the job fails with a name conflict; the
    cluster is never used or deleted)."""
    if cluster is None:
        return None
    meta = cluster["metadata"]
    return ClusterState(name=meta["name"], state=(cluster.get("status") or {}).get("state"),
                        deleting=bool(meta.get("deletionTimestamp")),
                        foreign=(meta.get("labels") or {}).get(children.LABEL_JOB_UID) != uid,
                        spec_hash=(meta.get("annotations") or {}).get(children.ANNOTATION_CLUSTER_HASH))


def progress_url(pod: Mapping[str, Any], settings: Settings) -> Optional[str]:
    annotations = pod["metadata"].get("annotations") or {}
    if settings.progress_endpoint_annotation and annotations.get(settings.progress_endpoint_annotation):
        return annotations[settings.progress_endpoint_annotation].rstrip("/") + "/progress"
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None
    port = settings.progress_port
    for container in pod["spec"]["containers"]:
        for p in container.get("ports") or []:
            if p.get("name") in (children.DASHBOARD_PORT_NAME, "progress"):  # "progress": older drivers
                port = p["containerPort"]
    return f"http://{ip}:{port}/progress"


def fetch_progress(pod: Mapping[str, Any], settings: Settings) -> Optional[dict[str, Any]]:
    """The driver's progress, or None while it is not serving yet (or has just exited)."""
    url = progress_url(pod, settings)
    if url is None:
        return None
    try:
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # pod IPs never go via a proxy
        with direct.open(url, timeout=settings.progress_timeout) as response:
            data = json.loads(response.read())
        return data if isinstance(data, dict) else None
    except (urllib.error.URLError, OSError, ValueError) as err:
        log.debug("no progress from %s: %s", url, err)
        return None
