"""kopf wiring only: every entry point is observe -> decide -> apply.

create, resume (operator restart), any spec change (spec.stop included) and the
timer all call the same reconcile, which checks spec.stop level-based; the timer
also mirrors the driver's progress. kopf may run the timer and a change handler
for one object at once, so a per-object lock serialises them; the status is
written before the children it names. A read the apiserver cannot answer
(kube.APIUnavailable), or an apiserver that is away (refused, 5xx: kube.unreachable), ends
the reconcile before anything is decided, and kopf retries it one interval later."""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Optional

import kopf

from . import observe
from . import status as core
from .crd import GROUP, PLURAL, STOPPED, TERMINAL, VERSION
from .kube import APIUnavailable, JobGone, Kube, status_patch, unreachable
from .metrics import OperatorMetrics
from .observed import Event
from .settings import Settings

log = logging.getLogger(__name__)


class Locks:
    """One lock per job, for the life of the process. Not in kopf's per-object memo: the
    supervisor in main.py may restart kopf (new memos) while a reconcile of the run that
    failed is still finishing in its worker thread."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def __call__(self, uid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(uid, threading.Lock())

    def forget(self, uid: str) -> None:
        with self._guard:
            self._locks.pop(uid, None)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _post(body: kopf.Body, events: list[Event]) -> None:
    meta = body["metadata"]
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        log.log(logging.WARNING if event.type == "Warning" else logging.INFO, "%s/%s %s: %s",
                meta["namespace"], meta["name"], event.reason, event.message)


def needs_timer(spec: dict[str, Any], status: dict[str, Any]) -> bool:
    """Whether the periodic reconcile should visit a job. Terminal jobs have nothing to
    poll (a spec change wakes them) unless a TTL will delete them, or a stop was
    withdrawn while it was still completing (Stopped, but spec.stop is already false)."""
    phase = status.get("phase")
    if phase not in TERMINAL:
        return True
    if phase == STOPPED:
        return not spec.get("stop", False)
    return (spec.get("cleanup") or {}).get("ttlSecondsAfterFinished") is not None


def _needs_timer(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return needs_timer(dict(spec), dict(status))


def transient(err: BaseException, interval: float) -> Optional[kopf.TemporaryError]:
    """The apiserver could not answer: a TemporaryError retried one interval later and logged
    in one line (kopf logs any other exception with its traceback, every interval, for as
    long as an outage lasts)."""
    if isinstance(err, APIUnavailable):
        return kopf.TemporaryError(str(err), delay=interval)
    if unreachable(err):
        what = " ".join(str(err).split())[:300]
        return kopf.TemporaryError(f"the apiserver did not answer ({type(err).__name__}: {what}); retrying",
                                   delay=interval)
    return None


def register(registry: kopf.OperatorRegistry, settings: Settings, kube: Kube,
             metrics: Optional[OperatorMetrics] = None) -> None:
    """Adds the DataJuicerJob handlers to registry, closing over settings and the client."""
    # A failed handler is retried after `backoff` (kopf's default is 60 s): one interval
    # instead, so a job whose reconciles failed while the apiserver was away is caught up
    # within a poll interval of its return.
    resource = dict(group=GROUP, version=VERSION, plural=PLURAL, registry=registry, backoff=settings.interval)
    metrics = metrics or OperatorMetrics()
    lock = Locks()

    def reconcile(body: kopf.Body, **kwargs: Any) -> None:
        began = time.monotonic()
        try:
            _reconcile(body)
        except JobGone:
            return  # deleted between the event and this read: nothing to reconcile
        except Exception as err:
            metrics.reconcile_errors.labels(type(err).__name__).inc()
            retry = transient(err, settings.interval)
            if retry is not None:
                raise retry from err
            raise
        finally:
            metrics.reconcile_seconds.observe(time.monotonic() - began)

    def _reconcile(body: kopf.Body) -> None:
        for _round in range(3):  # `again`: the first round only records the job id and child names
            with lock(body["metadata"]["uid"]):
                observed = observe.job(kube, body, settings, _now())
                decision = core.next_status(observed, settings)
                patch = status_patch(observed.status.dump(), decision.status)
                kube.patch_job_status(observed.namespace, observed.name, patch)
                failures = kube.apply(decision.create, decision.delete)
                events = list(decision.events)
                if failures:  # refused for good (quota, admission, invalid): say so, don't raise into kopf's retry loop
                    after, more = core.create_failed(observed.status, decision.status, failures)
                    kube.patch_job_status(observed.namespace, observed.name, status_patch(decision.status, after))
                    events += more
            metrics.reconciled(observed.namespace, observed.name, decision.status, observed.now,
                               poll_failed=observed.progress_polled and observed.progress is None)
            _post(body, events)
            if not decision.again:
                break

    def finalize(body: kopf.Body, **_: Any) -> None:
        uid = body["metadata"]["uid"]
        try:
            with lock(uid):
                observed = observe.job(kube, body, settings, _now(), with_progress=False)
                decision = core.teardown(observed, settings)
                kube.apply([], decision.delete)
        except JobGone:
            lock.forget(uid)
            return
        except Exception as err:
            retry = transient(err, settings.interval)
            if retry is not None:
                raise retry from err
            raise
        if not decision.waiting:
            metrics.forget(observed.namespace, observed.name)
            lock.forget(uid)
        if decision.waiting:
            raise kopf.TemporaryError("waiting for the driver to checkpoint and exit, then for the RayCluster",
                                      delay=settings.interval)

    kopf.on.create(**resource, id="reconcile-create")(reconcile)
    kopf.on.resume(**resource, id="reconcile-resume")(reconcile)
    kopf.on.update(**resource, field="spec", id="reconcile-spec")(reconcile)
    kopf.timer(**resource, interval=settings.interval, when=_needs_timer, id="reconcile-timer")(reconcile)
    kopf.on.delete(**resource, id="finalize")(finalize)
