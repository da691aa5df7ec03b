"""The operator's settings: read once from flags and env in main, then passed down.     [pure]"""
from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from djworker.version import add_version_flag, release_image

ENV_PREFIX = "DJ_OPERATOR_"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: tuple[str, ...] = ()  # empty: every namespace
    liveness: Optional[str] = "http://0.0.0.0:8080/healthz"
    # Served by the operator itself: 200 once its watches run (and, with peering, once it
    # knows whether it is the active replica), 503 before. None: not served.
    readiness: Optional[str] = None
    metrics_port: int = Field(0, ge=0, le=65535)  # /metrics (and /readyz) here; 0: no metrics
    peering: Optional[str] = None  # None: standalone, the default for a single replica
    # With peering, the replica with the highest priority works and the others wait; equal
    # priorities would pause them all, so an unset priority is drawn at random at start.
    priority: Optional[int] = None
    peering_lifetime: int = Field(60, ge=1)  # seconds a silent peer counts as alive: the handover bound
    interval: float = Field(10.0, gt=0)  # seconds between reconciles of an active job
    image: str = Field(default_factory=release_image)  # driver and Ray image when spec.image is unset
    driver_command: tuple[str, ...] = ("dj-process",)
    progress_port: int = 8000
    progress_timeout: float = Field(2.0, gt=0)
    # How long a running driver's /progress may fail to answer before the Progressing
    # condition turns False (a busy driver can miss a poll; a hung one misses them all).
    progress_grace_seconds: float = Field(60.0, ge=0)
    force_delete_after_seconds: float = Field(30.0, ge=0)  # past a pod's grace period (lost nodes)
    # Where to reach a driver's /progress when pod IPs are not routable from the operator
    # (an operator run outside the cluster, or the test node agent): a pod annotation whose
    # value is a base URL. Unset (the default) means http://<podIP>:<progress port>.
    progress_endpoint_annotation: Optional[str] = None
    verbose: bool = False


def parse(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags, falling back to DJ_OPERATOR_* env vars, then the defaults."""
    env = os.environ if env is None else env
    defaults = Settings()

    def from_env(name: str, default: object) -> object:
        return env.get(ENV_PREFIX + name.upper(), default)

    p = argparse.ArgumentParser(prog="dj-operator", description="Reconciles DataJuicerJob resources.")
    add_version_flag(p)
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", dest="namespaces",
                       help="watch only this namespace (repeatable); env DJ_OPERATOR_NAMESPACES=a,b")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (default)")
    p.add_argument("--liveness", default=from_env("liveness", defaults.liveness),
                   help="liveness endpoint URL, '' to disable (default %(default)s)")
    p.add_argument("--readiness", default=from_env("readiness", defaults.readiness) or None,
                   help="readiness endpoint URL, e.g. http://0.0.0.0:8081/readyz (default: none)")
    p.add_argument("--metrics-port", type=int, default=from_env("metrics_port", defaults.metrics_port),
                   help="serve Prometheus /metrics on this port; 0 disables (default %(default)s)")
    p.add_argument("--peering", default=from_env("peering", defaults.peering) or None,
                   help="kopf peering object name for multi-replica HA (default: standalone)")
    p.add_argument("--priority", type=int, default=from_env("priority", None),
                   help="peering priority; the highest live one is active (default: random per start)")
    p.add_argument("--peering-lifetime", type=int, default=from_env("peering_lifetime", defaults.peering_lifetime),
                   help="seconds before a silent peer counts as gone (bounds the handover after a crash)")
    p.add_argument("--interval", type=float, default=from_env("interval", defaults.interval),
                   help="seconds between reconciles of an active job")
    p.add_argument("--image", default=from_env("image", defaults.image),
                   help="driver and Ray image when a job sets no spec.image")
    p.add_argument("--progress-timeout", type=float, default=from_env("progress_timeout", defaults.progress_timeout))
    p.add_argument("--progress-grace-seconds", type=float,
                   default=from_env("progress_grace_seconds", defaults.progress_grace_seconds))
    p.add_argument("--force-delete-after-seconds", type=float,
                   default=from_env("force_delete_after_seconds", defaults.force_delete_after_seconds))
    p.add_argument("--progress-endpoint-annotation",
                   default=from_env("progress_endpoint_annotation", None) or None,
                   help="read each driver's progress URL from this pod annotation (out-of-cluster runs)")
    p.add_argument("--verbose", "-v", action="store_true", default=bool(from_env("verbose", "")))
    args = p.parse_args(argv)

    namespaces: tuple[str, ...] = ()
    if args.namespaces:
        namespaces = tuple(args.namespaces)
    elif not args.all_namespaces and env.get(ENV_PREFIX + "NAMESPACES"):
        namespaces = tuple(n.strip() for n in env[ENV_PREFIX + "NAMESPACES"].split(",") if n.strip())
    return Settings(
        namespaces=namespaces,
        liveness=args.liveness or None,
        readiness=args.readiness or None,
        metrics_port=args.metrics_port,
        peering=args.peering,
        priority=args.priority,
        peering_lifetime=args.peering_lifetime,
        interval=args.interval,
        image=args.image,
        progress_timeout=args.progress_timeout,
        progress_grace_seconds=args.progress_grace_seconds,
        force_delete_after_seconds=args.force_delete_after_seconds,
        progress_endpoint_annotation=args.progress_endpoint_annotation,
        verbose=args.verbose,
    )
