"""`dj-operator`: settings from flags and env, then kopf.run with this package's handlers."""
from __future__ import annotations

import logging
import random
import threading
from typing import Any, Optional, Sequence
from urllib.parse import urlsplit

import kopf

from . import handlers, kube
from .crd import GROUP, PLURAL
from .metrics import OperatorMetrics, metrics_app, probe, serve
from .settings import Settings, parse

log = logging.getLogger(__name__)


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
    started watching it. Reads kopf's own flags (from other threads; they only go up)."""

    def __init__(self) -> None:
        from kopf._cogs.structs.references import Insights  # kopf exports no public handle on this

        self.started = threading.Event()
        self.insights = Insights()

    def missing(self) -> Optional[str]:
        if not self.started.is_set():
            return "kopf is starting"
        if not self.insights.ready_resources.is_set():
            return "resources are being discovered"
        if not any(r.group == GROUP and r.plural == PLURAL for r in self.insights.watched_resources):
            return f"{PLURAL}.{GROUP} is not watched (is the CRD installed?)"
        return None


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
    kopf.run(
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
    )


if __name__ == "__main__":
    main()
