"""`dj-operator`: settings from flags and env, then kopf.run with this package's handlers."""
from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from typing import Any, Callable, Optional, Sequence
from urllib.parse import urlsplit

import kopf

from . import handlers, kube
from .crd import GROUP, PLURAL
from .metrics import OperatorMetrics, metrics_app, probe, serve
from .settings import Settings, parse

log = logging.getLogger(__name__)


# Seconds between kopf's tries of one API request: quick at first (a blip), then every 5 s.
ERROR_BACKOFFS: tuple[float, ...] = (1, 1, 2, 2, 3, 3) + (5,) * 58
OUTAGE_TOLERANCE_S = sum(ERROR_BACKOFFS)  # 302 s: about 5 minutes


def kopf_settings(settings: Settings) -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    s.posting.level = logging.WARNING  # kopf.event() always posts; routine logs stay out of Events
    s.persistence.finalizer = "datajuicer.io/finalizer"
    # Handler progress and the diff base live in annotations, so status stays ours alone.
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="datajuicer.io")
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="datajuicer.io")
    s.watching.connect_timeout = 10
    s.watching.server_timeout = 300
    s.networking.request_timeout = 30
    # kopf retries a failed request (a watch included; refused, timed out or 5xx) after each of
    # these and escalates after the last. Its default waits up to 21 s between tries, so a
    # watch could resume that long after the apiserver is back, and gives up after 54 s, which
    # ends kopf's whole run. At most 5 s apart, the watches resume within 5 s of the return;
    # OUTAGE_TOLERANCE_S of tries ride out an apiserver upgrade or a control-plane failover
    # without a restart. A longer outage ends the run, and supervise() starts a new one.
    s.networking.error_backoffs = ERROR_BACKOFFS
    s.execution.max_workers = 8
    s.peering.lifetime = settings.peering_lifetime
    return s


def peering_priority(settings: Settings) -> Optional[int]:
    """The replica's priority: as set, or drawn at random (kopf pauses every replica of an
    equal priority, so two replicas with the default would both stand still)."""
    if settings.peering is None:
        return None
    return settings.priority if settings.priority is not None else random.randint(1, 2**31 - 1)


class Readiness:
    """Ready once kopf has run its startup, discovered the DataJuicerJob resource and
    started watching it. Reads kopf's own flags (from other threads; they only go up
    within one kopf run; renew() starts them afresh for the next run)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.restarting: Optional[str] = None
        self.renew()

    def renew(self) -> None:
        """Fresh flags for a new kopf run (kopf's Insights hold asyncio primitives bound to
        the event loop of the run that used them)."""
        from kopf._cogs.structs.references import Insights  # kopf exports no public handle on this

        self.started.clear()
        self.insights = Insights()

    def missing(self) -> Optional[str]:
        if self.restarting:
            return self.restarting
        if not self.started.is_set():
            return "kopf is starting"
        if not self.insights.ready_resources.is_set():
            return "resources are being discovered"
        if self.unwatched():
            return f"{PLURAL}.{GROUP} is not watched (is the CRD installed?)"
        return None

    def unwatched(self) -> bool:
        """kopf has scanned the cluster's APIs and does not watch DataJuicerJobs."""
        return self.insights.ready_resources.is_set() and not any(
            r.group == GROUP and r.plural == PLURAL for r in self.insights.watched_resources)


def start_endpoints(settings: Settings, metrics: OperatorMetrics, readiness: Readiness) -> None:
    """/metrics on --metrics-port and /readyz at --readiness; one server where they share a port."""
    hosts: dict[int, str] = {}
    routes: dict[int, dict[str, Any]] = {}
    if settings.readiness:
        url = urlsplit(settings.readiness)
        port = url.port or 80
        hosts[port] = url.hostname or "0.0.0.0"
        routes.setdefault(port, {})[url.path or "/"] = probe(readiness.missing)
    if settings.metrics_port:
        hosts[settings.metrics_port] = "0.0.0.0"  # scraped from other pods
        routes.setdefault(settings.metrics_port, {})["/metrics"] = metrics_app(metrics)
    for port, paths in routes.items():
        serve(hosts[port], port, paths)


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse(argv)
    kopf.configure(verbose=settings.verbose)
    if not settings.verbose:  # one line per handler run and timer tick is noise; transitions are logged below
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    client = kube.Kube(kube.api_client())
    metrics, readiness = OperatorMetrics(), Readiness()
    start_endpoints(settings, metrics, readiness)
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_via_client)
    handlers.register(registry, settings, client, metrics)
    priority = peering_priority(settings)
    if priority is not None:
        log.info("peering %r with priority %d", settings.peering, priority)

    def run_kopf(stop: StopFlag) -> None:
        async def operator() -> None:
            await kopf.operator(
                registry=registry,
                settings=kopf_settings(settings),
                standalone=settings.peering is None,
                peering_name=settings.peering,
                priority=priority,
                clusterwide=not settings.namespaces,
                namespaces=settings.namespaces,
                liveness_endpoint=settings.liveness,
                insights=readiness.insights,
                ready_flag=readiness.started,
                stop_flag=stop.bind(asyncio.get_running_loop()),
            )

        try:
            asyncio.run(operator())  # what kopf.run does, with a stop flag bound to its loop
        except asyncio.CancelledError:
            pass

    supervise(run_kopf, readiness, metrics, served=client.job_api_served)


# Seconds between in-process restarts of kopf: doubling from the first, capped, and back to
# the first once a run has lasted STABLE_AFTER_S (a crash loop slows down, a rare blip does not).
RESTART_BACKOFF_S = (1.0, 10.0)
STABLE_AFTER_S = 120.0
# How long kopf may run without watching DataJuicerJobs while their API is served before it
# is restarted to scan again.
UNWATCHED_GRACE_S = 10.0


class StopFlag:
    """Stops one kopf run from another thread. kopf waits on a threading.Event stop flag in
    a thread of the loop's default executor, which asyncio.run then joins at exit: a run that
    ended on an error would hang there until the flag was set. An asyncio.Event of the run's
    own loop has no such thread; set() reaches it thread-safely."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._event: Optional[asyncio.Event] = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        """The flag to give kopf, created in (and for) the running loop."""
        with self._lock:
            self._loop, self._event = loop, asyncio.Event()
            if self.requested.is_set():
                self._event.set()
            return self._event

    def set(self) -> None:
        with self._lock:
            self.requested.set()
            if self._loop is not None and self._event is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._event.set)


class Restart(Exception):
    """kopf was stopped by the supervisor to scan the cluster's APIs again."""


def supervise(run: Callable[[StopFlag], None], readiness: Readiness, metrics: OperatorMetrics,
              served: Callable[[], bool], sleep: Callable[[float], None] = time.sleep,
              clock: Callable[[], float] = time.monotonic, check_every_s: float = 1.0) -> None:
    """Runs kopf until it stops cleanly (a signal), restarting it when it stops on an error
    or stands without watching DataJuicerJobs while their API is served.

    Both happen for a few seconds after an apiserver restart, while the port is open but the
    CRDs' handlers are not installed yet and every request under datajuicer.io answers
    `404 page not found`. A watch stream reconnecting then fails with an error kopf does not
    retry, which ends the whole of kopf (as would a 5xx or 403 outlasting its request
    retries); and a kopf that scans the APIs then finds no DataJuicerJob API and rescans only
    when a CRD changes, which may never happen. Both are transient. A restarted kopf lists
    every job and runs the resume handler for each; the reconcile is idempotent with all
    state in the CRs, so the jobs are caught up at once, as after a pod restart, without a
    CrashLoopBackOff's growing delays. `run(stop)` is one kopf run; setting `stop` ends it."""
    first, cap = RESTART_BACKOFF_S
    delay = first
    while True:
        began, stop, done = clock(), StopFlag(), threading.Event()
        rescan: list[str] = []

        def watch_resolution() -> None:
            unwatched_since: Optional[float] = None
            while not done.wait(check_every_s):
                if not readiness.unwatched():
                    unwatched_since = None
                    continue
                unwatched_since = unwatched_since if unwatched_since is not None else clock()
                if clock() - unwatched_since >= UNWATCHED_GRACE_S and served():
                    rescan.append(f"{PLURAL}.{GROUP} is served, but kopf scanned the APIs before it was")
                    stop.set()
                    return

        watchdog = threading.Thread(target=watch_resolution, name="kopf-watchdog", daemon=True)
        watchdog.start()
        try:
            run(stop)
            if not rescan:
                return  # stopped on purpose (SIGTERM/SIGINT): kopf has shut down cleanly
            err: Exception = Restart(rescan[0])
        except Exception as raised:  # noqa: BLE001 - every error that ends kopf is retried: the pod would be restarted anyway
            err = raised
        finally:
            done.set()
            watchdog.join()
        if clock() - began >= STABLE_AFTER_S:
            delay = first
        what = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
        metrics.kopf_restarts.labels(type(err).__name__).inc()
        readiness.restarting = f"kopf stopped on {what}; restarting its watches in {delay:g}s"
        log.error("kopf stopped on %s; restarting its watches in %gs (the jobs' state is in their "
                  "status, nothing is lost)", what, delay)
        sleep(delay)
        delay = min(delay * 2, cap)
        readiness.renew()
        readiness.restarting = None
