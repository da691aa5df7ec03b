"""The operator's Prometheus metrics, and the small HTTP server for /metrics and /readyz.

Per-job series come from a table the reconciles keep up to date (the status each one
wrote), exported by a collector at scrape time: a deleted job's series go with it, and
no per-job label set outlives its job. Label sets stay small: namespace and name per
job, phase from the CRD's eight; never partition ids."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any, Callable, Iterable, Mapping, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .crd import FAILED, PENDING, PROVISIONING, RETRYING, RUNNING, STOPPED, STOPPING, SUCCEEDED
from .observed import parse_time

log = logging.getLogger(__name__)
PHASES = (PENDING, PROVISIONING, RUNNING, RETRYING, STOPPING, STOPPED, SUCCEEDED, FAILED)
PREFIX = "datajuicer"


@dataclass
class JobTrack:
    """What the metrics know of one job: its last written status, and the seconds it
    spent in each phase, counted from the moment this operator first saw it in that phase
    (or the phase's lastTransitionTime, for the phase it was in then)."""

    phase: Optional[str] = None
    since: Optional[datetime] = None  # when the time in `phase` was last added up
    seconds: dict[str, float] = field(default_factory=dict)
    partitions_completed: int = 0
    partitions_total: int = 0
    samples_processed: int = 0
    attempt: int = 0


def fold(track: JobTrack, status: Mapping[str, Any], now: datetime) -> JobTrack:
    """track after a reconcile wrote `status` at `now` (in place, and returned).  [pure]"""
    phase = status.get("phase")
    if track.phase is not None and track.since is not None:
        track.seconds[track.phase] = track.seconds.get(track.phase, 0.0) + max(
            (now - track.since).total_seconds(), 0.0)
    elif phase is not None:  # first sight: count the current phase from its transition
        began = parse_time(status.get("lastTransitionTime")) or now
        track.seconds[phase] = track.seconds.get(phase, 0.0) + max((now - began).total_seconds(), 0.0)
    track.phase, track.since = phase, now
    parts, samples = status.get("partitions") or {}, status.get("samples") or {}
    track.partitions_completed = int(parts.get("completed") or 0)
    track.partitions_total = int(parts.get("total") or 0)
    track.samples_processed = int(samples.get("processed") or 0)
    track.attempt = int(status.get("attempt") or 0)
    return track


class JobTable(Collector):
    """Every job's JobTrack, keyed by (namespace, name); exported as gauges on scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str], JobTrack] = {}

    def record(self, namespace: str, name: str, status: Mapping[str, Any], now: datetime) -> None:
        with self._lock:
            fold(self._jobs.setdefault((namespace, name), JobTrack()), status, now)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._jobs.pop((namespace, name), None)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        with self._lock:
            jobs = {key: JobTrack(t.phase, t.since, dict(t.seconds), t.partitions_completed, t.partitions_total,
                                  t.samples_processed, t.attempt) for key, t in self._jobs.items()}
        by_phase = GaugeMetricFamily(f"{PREFIX}_jobs", "DataJuicerJobs by status.phase", labels=["phase"])
        counts = {p: 0 for p in PHASES}
        for t in jobs.values():
            if t.phase in counts:
                counts[t.phase] += 1
        for phase, n in counts.items():
            by_phase.add_metric([phase], n)
        yield by_phase
        per_job = ["namespace", "name"]
        families = {
            "partitions_completed": GaugeMetricFamily(f"{PREFIX}_job_partitions_completed",
                                                      "Partitions the job has completed", labels=per_job),
            "partitions_total": GaugeMetricFamily(f"{PREFIX}_job_partitions_total",
                                                  "Partitions the job's plan has", labels=per_job),
            "samples_processed": GaugeMetricFamily(f"{PREFIX}_job_samples_processed",
                                                   "Input samples the job has processed", labels=per_job),
            "attempt": GaugeMetricFamily(f"{PREFIX}_job_attempt", "The job's current driver attempt", labels=per_job),
        }
        phase_seconds = GaugeMetricFamily(f"{PREFIX}_job_phase_seconds",
                                          "Seconds the job has spent in each phase (as seen by this operator)",
                                          labels=[*per_job, "phase"])
        for (namespace, name), t in sorted(jobs.items()):
            for attr, family in families.items():
                family.add_metric([namespace, name], getattr(t, attr))
            for phase, seconds in sorted(t.seconds.items()):
                phase_seconds.add_metric([namespace, name, phase], seconds)
        yield from families.values()
        yield phase_seconds


class OperatorMetrics:
    """All of the operator's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = JobTable()
        self.registry.register(self.jobs)
        self.reconcile_seconds = Histogram(
            f"{PREFIX}_operator_reconcile_duration_seconds", "Time one reconcile of a job takes (API calls included)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=self.registry)
        self.reconcile_errors = Counter(
            f"{PREFIX}_operator_reconcile_errors", "Reconciles that raised (kopf retries them)",
            ["error"], registry=self.registry)
        self.kopf_restarts = Counter(
            f"{PREFIX}_operator_kopf_restarts", "Times kopf stopped on an error and its watches were restarted in-process",
            ["error"], registry=self.registry)
        self.progress_poll_failures = Counter(
            f"{PREFIX}_operator_progress_poll_failures", "Polls of a running driver's /progress that got no answer",
            ["namespace", "name"], registry=self.registry)

    def reconciled(self, namespace: str, name: str, status: Mapping[str, Any], now: datetime,
                   poll_failed: bool) -> None:
        self.jobs.record(namespace, name, status, now)
        if poll_failed:
            self.progress_poll_failures.labels(namespace, name).inc()

    def forget(self, namespace: str, name: str) -> None:
        self.jobs.forget(namespace, name)
        try:
            self.progress_poll_failures.remove(namespace, name)
        except KeyError:
            pass


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes and probes are not news
        pass


def serve(host: str, port: int, routes: Mapping[str, Callable[[], tuple[int, bytes]] | Any]) -> _Server:
    """Serves `routes` on host:port from a daemon thread: each path maps to either a WSGI
    app (prometheus_client's) or a probe returning (status code, body)."""
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        target = routes.get(path)
        if target is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [f"not found; try {', '.join(sorted(routes))}\n".encode()]
        if isinstance(target, _Probe):
            code, body = target()
            start_response(f"{code} {'OK' if code == 200 else 'Service Unavailable'}",
                           [("Content-Type", "text/plain")])
            return [body]
        return target(environ, start_response)

    server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name=f"http-{port}", daemon=True).start()
    log.info("serving %s on %s:%s", ", ".join(sorted(routes)), host, server.server_port)
    return server


class _Probe:
    def __init__(self, check: Callable[[], Optional[str]]) -> None:
        self.check = check

    def __call__(self) -> tuple[int, bytes]:
        missing = self.check()
        return (200, b"ok\n") if missing is None else (503, f"not ready: {missing}\n".encode())


def probe(check: Callable[[], Optional[str]]) -> _Probe:
    """A readiness route: check() returns None when ready, else what is still missing."""
    return _Probe(check)


def metrics_app(metrics: OperatorMetrics) -> Any:
    return make_wsgi_app(metrics.registry)
