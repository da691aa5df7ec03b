"""The values the core decides on: one observation of a job, and the decision.      [pure]

observe.py builds Observed from the API; the core tests build it by hand."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from .crd import Job, JobSpec, Status


@dataclass(frozen=True)
class PodState:
    name: str
    attempt: int
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    exit_code: Optional[int] = None
    deleting: bool = False
    deletion_deadline: Optional[datetime] = None  # metadata.deletionTimestamp: end of the grace period
    message: Optional[str] = None  # the container's termination reason/message
    blocked: Optional[str] = None  # why a Pending driver cannot start (waiting reason, scheduling failure)
    final_progress: Optional[dict[str, Any]] = None  # the driver's last progress, from its termination message

    @property
    def is_finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True)
class ClusterState:
    name: str
    state: Optional[str] = None
    deleting: bool = False
    foreign: bool = False  # same name, not owned by this job: never used, never deleted
    spec_hash: Optional[str] = None  # children.ANNOTATION_CLUSTER_HASH: the spec it was made from

    @property
    def is_ready(self) -> bool:
        return self.state == "ready" and not self.deleting and not self.foreign


@dataclass(frozen=True)
class Observed:
    """One snapshot of a job and what it owns; observe.py builds it, tests build it by hand."""

    name: str
    namespace: str
    uid: str
    now: datetime
    spec: Optional[JobSpec] = None
    spec_error: Optional[str] = None
    spec_warnings: tuple[str, ...] = ()  # unknown spec fields that were ignored
    status: Status = field(default_factory=Status)
    generation: int = 1
    pods: tuple[PodState, ...] = ()  # every driver pod of this job, any attempt
    cluster: Optional[ClusterState] = None
    present: frozenset[tuple[str, str]] = frozenset()  # (kind, name) of owned ConfigMaps and PVCs
    progress: Optional[dict[str, Any]] = None  # the current driver's GET /progress, if it answered
    progress_polled: bool = False  # a poll was attempted (so progress=None means it failed)
    new_token: str = ""  # a fresh random token, for a Ray auth Secret this reconcile may create

    @property
    def job(self) -> Job:
        assert self.spec is not None
        return Job(self.name, self.namespace, self.uid, self.spec)

    def pod(self, name: str) -> Optional[PodState]:
        return next((p for p in self.pods if p.name == name), None)


@dataclass(frozen=True)
class CreateFailure:
    """A create the apiserver refused for good (quota, admission, an invalid field)."""

    kind: str
    name: str
    code: int  # 400, 403 or 422
    message: str


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Decision:
    status: dict[str, Any]
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    again: bool = False  # reconcile again right away (the status had to be written first)
    waiting: bool = False  # teardown only: children are still going away


def timestamp(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Optional[str]) -> Optional[datetime]:
    if not value:
        return None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def seconds_since(value: Optional[str], now: datetime) -> float:
    then = parse_time(value)
    return 0.0 if then is None else (now - then).total_seconds()


_SECRETS = [(re.compile(r"(\w+://)[^/@\s]+@"), r"\1***@"),
            (re.compile(r"(?i)((?:secret|password|token|key)[\w-]*\s*[=:]\s*)\S+"), r"\1***")]


def scrub(text: str, limit: int = 300) -> str:
    """One line without credentials: it goes into status.message and Events, which more
    people can read than the pod's logs."""
    line = " ".join(text.split())
    for pattern, repl in _SECRETS:
        line = pattern.sub(repl, line)
    return line[:limit]
