"""`dj-operator`: settings from flags and env, then kopf.run with this package's handlers."""
from __future__ import annotations

import logging
from typing import Sequence

import kopf

from . import handlers, kube
from .settings import Settings, parse


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
    return s


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse(argv)
    kopf.configure(verbose=settings.verbose)
    if not settings.verbose:  # one line per handler run and timer tick is noise; transitions are logged below
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    client = kube.Kube(kube.api_client())
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_via_client)
    handlers.register(registry, settings, client)
    kopf.run(
        registry=registry,
        settings=kopf_settings(settings),
        standalone=settings.peering is None,
        peering_name=settings.peering,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness,
    )


if __name__ == "__main__":
    main()
