"""The DataJuicerJob resource: its spec and status as pydantic models.            [pure]

The CRD's OpenAPI schema (crds/datajuicer.io_datajuicerjobs.yaml) rejects wrong
types at `kubectl apply`; these models add the cross-field rules a v1.20 schema
cannot express (no CEL), and give the rest of the operator typed access. A spec
that fails here sets the job `Failed` with reason `InvalidSpec`.

Over 300 lines because it is the resource's schema: every spec and status section as a model."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

GROUP = "datajuicer.io"
VERSION = "v1alpha1"
PLURAL = "datajuicerjobs"
KIND = "DataJuicerJob"
API_VERSION = f"{GROUP}/{VERSION}"

RAY_GROUP, RAY_VERSION, RAY_PLURAL = "ray.io", "v1", "rayclusters"

# status.phase, as the CRD enumerates it
PENDING, PROVISIONING, RUNNING, RETRYING = "Pending", "Provisioning", "Running", "Retrying"
STOPPING, STOPPED, SUCCEEDED, FAILED = "Stopping", "Stopped", "Succeeded", "Failed"
ACTIVE = frozenset({PENDING, PROVISIONING, RUNNING, RETRYING})
TERMINAL = frozenset({STOPPED, SUCCEEDED, FAILED})  # nothing runs; only a spec change (or a TTL) acts

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
EXECUTORS = ("default", "ray", "ray_partitioned")
STRATEGIES = ("every_op", "every_partition", "every_n_ops", "manual", "disabled")


# Recipe keys the operator sets itself: an override of one would run a different job (or
# write elsewhere) than the status reports. Each maps to the spec field to use instead.
RESERVED_OVERRIDES = {
    "job_id": "spec.jobId", "event_log_dir": "spec.eventLog (the operator mounts it)",
    "checkpoint_dir": "spec.checkpointDir", "work_dir": "spec.workDir", "executor_type": "spec.executorType",
    "dataset_path": "spec.datasetPath", "export_path": "spec.exportPath",
    "checkpoint.strategy": "spec.checkpoint.strategy", "checkpoint.n_ops": "spec.checkpoint.nOps",
    "checkpoint.op_names": "spec.checkpoint.opNames",
    "intermediate_storage.retention_policy": "spec.cleanup.checkpointRetention",
}
# Fields fixed once a job is accepted: changing them would start a different job under the same CR.
IMMUTABLE = ("jobId", "executorType", "eventLog")


class SpecError(ValueError):
    """The spec cannot be run as written; str(err) names the field and the fix."""


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class RecipeConfigMapRef(Model):
    name: str
    key: str = "recipe.yaml"


class S3SecretRef(Model):
    """A Secret holding the S3 credentials; only its name ever appears in status or events."""

    name: str
    access_key_id_key: str = "AWS_ACCESS_KEY_ID"
    secret_access_key_key: str = "AWS_SECRET_ACCESS_KEY"


class S3Spec(Model):
    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    secret_ref: Optional[S3SecretRef] = None


class StorageSpec(Model):
    s3: S3Spec = Field(default_factory=S3Spec)


class EventLogSpec(Model):
    """The fast volume for the event log and work dir: it must outlive driver attempts,
    because a resumed run reads the events the stopped one wrote."""

    claim_name: Optional[str] = None  # an existing PVC; otherwise the operator creates one
    storage_class_name: Optional[str] = None
    size: str = "1Gi"
    access_modes: list[str] = Field(default_factory=lambda: ["ReadWriteOnce"])
    empty_dir: bool = False  # scratch only: events are lost between attempts
    retain: bool = False  # keep the operator-created PVC after the job is deleted


class CheckpointSpec(Model):
    strategy: Optional[Literal[STRATEGIES]] = None  # type: ignore[valid-type]
    n_ops: Optional[int] = Field(None, ge=1)
    op_names: Optional[list[str]] = None

    @model_validator(mode="after")
    def _strategy_arguments(self) -> "CheckpointSpec":
        if self.strategy == "manual" and not self.op_names:
            raise ValueError("checkpoint.strategy 'manual' needs checkpoint.opNames (the ops to checkpoint after)")
        return self


# Label keys the operator sets on every child: a user label may not shadow them.
RESERVED_LABEL_PREFIXES = ("datajuicer.io/", "app.kubernetes.io/", "ray.io/")
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


class SchedulingSpec(Model):
    """Where a pod may run and what it carries, passed through to the pod spec as written.

    spec.scheduling applies to the driver and every Ray pod; driver.scheduling,
    ray.head.scheduling and ray.workerGroups[].scheduling add to it (maps merge, the more
    specific value wins; lists are concatenated)."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: Optional[dict[str, Any]] = None
    priority_class_name: Optional[str] = None
    image_pull_secrets: list[dict[str, str]] = Field(default_factory=list)  # [{name: my-registry}]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_reserved_labels(self) -> "SchedulingSpec":
        for key in self.labels:
            if key.startswith(RESERVED_LABEL_PREFIXES) or key == KUEUE_QUEUE_LABEL:
                use = " (use spec.queueName)" if key == KUEUE_QUEUE_LABEL else ""
                raise ValueError(f"scheduling.labels: {key!r} is set by the operator{use}; pick another key")
        for secret in self.image_pull_secrets:
            if set(secret) != {"name"}:
                raise ValueError(f"scheduling.imagePullSecrets: each entry is {{name: <Secret>}}, got {secret}")
        return self

    def merged(self, more: Optional["SchedulingSpec"]) -> "SchedulingSpec":
        """self with the more specific `more` laid over it."""
        if more is None:
            return self
        return SchedulingSpec(
            node_selector={**self.node_selector, **more.node_selector},
            tolerations=[*self.tolerations, *more.tolerations],
            affinity=more.affinity if more.affinity is not None else self.affinity,
            priority_class_name=more.priority_class_name or self.priority_class_name,
            image_pull_secrets=[*self.image_pull_secrets,
                                *(s for s in more.image_pull_secrets if s not in self.image_pull_secrets)],
            labels={**self.labels, **more.labels},
            annotations={**self.annotations, **more.annotations},
        )


class ModelsSpec(Model):
    """Model files (fastText, KenLM, SentencePiece, tokenizers) for the model-based ops,
    mounted read-only into the driver and every Ray pod at `mountPath`, which the pods get
    as DATA_JUICER_MODELS_CACHE. Either an existing PVC, or an S3 prefix an init container
    copies into a per-pod volume before the job starts: nothing is downloaded later."""

    claim_name: Optional[str] = None
    sub_path: Optional[str] = None  # a directory inside the claim
    s3_prefix: Optional[str] = None  # s3://bucket/models/, read with spec.storage.s3's credentials
    size_limit: Optional[str] = None  # of the per-pod volume the S3 prefix is copied into
    mount_path: str = "/dj/models"

    @model_validator(mode="after")
    def _one_source(self) -> "ModelsSpec":
        if (self.claim_name is None) == (self.s3_prefix is None):
            raise ValueError("spec.models: set exactly one of claimName (a PVC) or s3Prefix (s3://bucket/prefix)")
        if self.s3_prefix is not None and not self.s3_prefix.startswith("s3://"):
            raise ValueError(f"spec.models.s3Prefix {self.s3_prefix!r} must start with s3://")
        if self.sub_path and self.claim_name is None:
            raise ValueError("spec.models.subPath needs spec.models.claimName")
        if not self.mount_path.startswith("/"):
            raise ValueError(f"spec.models.mountPath {self.mount_path!r} must be an absolute path")
        return self


class HeadSpec(Model):
    resources: dict[str, Any] = Field(default_factory=dict)
    ray_start_params: dict[str, str] = Field(default_factory=dict)
    scheduling: Optional[SchedulingSpec] = None


class WorkerGroupSpec(Model):
    name: str = "workers"
    replicas: int = Field(1, ge=0)
    min_replicas: Optional[int] = Field(None, ge=0)
    max_replicas: Optional[int] = Field(None, ge=0)
    resources: dict[str, Any] = Field(default_factory=dict)
    ray_start_params: dict[str, str] = Field(default_factory=dict)
    scheduling: Optional[SchedulingSpec] = None

    @model_validator(mode="after")
    def _bounds(self) -> "WorkerGroupSpec":
        low = self.replicas if self.min_replicas is None else self.min_replicas
        high = max(self.replicas, low) if self.max_replicas is None else self.max_replicas
        if not low <= self.replicas <= high:
            raise ValueError(f"ray.workerGroups[{self.name}]: need minReplicas <= replicas <= maxReplicas, "
                             f"got {low} <= {self.replicas} <= {high}")
        return self


class RaySpec(Model):
    ray_version: str = "2.60.0"
    image: Optional[str] = None
    head: HeadSpec = Field(default_factory=HeadSpec)
    worker_groups: list[WorkerGroupSpec] = Field(default_factory=lambda: [WorkerGroupSpec()])
    autoscaling: bool = False  # KubeRay's in-tree autoscaler, between min and max replicas
    ready_timeout_seconds: int = Field(600, ge=1)


class DriverSpec(Model):
    resources: dict[str, Any] = Field(default_factory=dict)
    env: list[dict[str, Any]] = Field(default_factory=list)
    service_account_name: Optional[str] = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    termination_grace_period_seconds: int = Field(60, ge=0)
    scheduling: Optional[SchedulingSpec] = None


class BackoffSpec(Model):
    initial_seconds: float = Field(10, ge=0)
    max_seconds: float = Field(300, ge=0)


class CleanupSpec(Model):
    ttl_seconds_after_finished: Optional[int] = Field(None, ge=0)  # delete the job this long after it finished
    keep_ray_cluster: bool = False  # keep the RayCluster after the job finished (for inspection)
    # The engine's intermediate_storage.retention_policy: what happens to checkpoints afterwards.
    checkpoint_retention: Optional[Literal["keep_all", "keep_failed_only", "cleanup_all"]] = None


class JobSpec(Model):
    """What the user asks for. Everything but `stop` applies from the next driver attempt."""

    image: Optional[str] = None
    job_id: Optional[str] = None
    executor_type: Literal[EXECUTORS] = "ray_partitioned"  # type: ignore[valid-type]
    recipe: Optional[dict[str, Any]] = None
    recipe_config_map: Optional[RecipeConfigMapRef] = None
    dataset_path: Optional[str] = None
    export_path: Optional[str] = None
    checkpoint_dir: Optional[str] = None
    work_dir: Optional[str] = None
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    overrides: dict[str, str] = Field(default_factory=dict)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    event_log: EventLogSpec = Field(default_factory=EventLogSpec)
    ray: RaySpec = Field(default_factory=RaySpec)
    driver: DriverSpec = Field(default_factory=DriverSpec)
    backoff_limit: int = Field(3, ge=0)
    backoff: BackoffSpec = Field(default_factory=BackoffSpec)
    active_deadline_seconds: Optional[int] = Field(None, ge=1)  # from the first start, stops included
    progress_deadline_seconds: Optional[int] = Field(None, ge=1)  # longest a running driver may show no progress
    start_deadline_seconds: int = Field(600, ge=1)  # longest a driver may take to start (create refused, stuck Pending)
    cleanup: CleanupSpec = Field(default_factory=CleanupSpec)
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    # Kueue's LocalQueue: the label goes on the RayCluster (ray executors) or the driver
    # pod (default executor), the object Kueue admits. Create the job with stop: true to
    # hold it (Kueue's "suspend"); nothing is created until stop turns false.
    queue_name: Optional[str] = None
    models: Optional[ModelsSpec] = None
    stop: bool = False

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "JobSpec":
        if (self.recipe is None) == (self.recipe_config_map is None):
            raise ValueError("set exactly one of spec.recipe (inline) or spec.recipeConfigMap (name, key)")
        if self.recipe is not None and not isinstance(self.recipe.get("process"), list):
            raise ValueError("spec.recipe.process must be a list of ops, e.g. [{text_length_filter: {min_len: 10}}]")
        if self.job_id is not None and not JOB_ID_PATTERN.match(self.job_id):
            raise ValueError(f"spec.jobId {self.job_id!r} must match {JOB_ID_PATTERN.pattern}")
        for key in self.overrides:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
                raise ValueError(f"spec.overrides key {key!r} must be a dotted recipe key like 'partition.size'")
            if key in RESERVED_OVERRIDES:
                raise ValueError(f"spec.overrides key {key!r} is set by the operator; use {RESERVED_OVERRIDES[key]} "
                                 "instead")
        if self.event_log.claim_name and self.event_log.empty_dir:
            raise ValueError("spec.eventLog: set claimName or emptyDir, not both")
        if len({g.name for g in self.ray.worker_groups}) != len(self.ray.worker_groups):
            raise ValueError("spec.ray.workerGroups: group names must be unique")
        return self

    @property
    def is_ray(self) -> bool:
        return self.executor_type in ("ray", "ray_partitioned")

    @property
    def checkpoint_location(self) -> Optional[str]:
        """Where checkpoints go, as far as the spec (or an inline recipe) says."""
        return self.checkpoint_dir or (self.recipe or {}).get("checkpoint_dir")


def parse_spec_lenient(raw: dict[str, Any] | None) -> tuple[JobSpec, list[str]]:
    """The spec, ignoring fields this operator does not know (a newer CRD, or a typo the
    schema let through), and their paths so the caller can warn; SpecError otherwise."""
    data: dict[str, Any] = json.loads(json.dumps(dict(raw or {})))
    unknown: list[str] = []
    for _ in range(20):
        try:
            return JobSpec.model_validate(data), unknown
        except ValidationError as err:
            extra = [e["loc"] for e in err.errors() if e["type"] == "extra_forbidden"]
            if not extra or len(extra) != len(err.errors()):
                break
            for loc in extra:
                parent: Any = data
                for part in loc[:-1]:
                    parent = parent[part]
                parent.pop(loc[-1], None)
                unknown.append("spec." + ".".join(str(p) for p in loc))
    return parse_spec(raw), unknown  # raises, naming every problem


def spec_dump(spec: JobSpec) -> dict[str, Any]:
    """The spec as the CR would carry it (camelCase), for status.lastValidSpec."""
    return spec.model_dump(by_alias=True, exclude_none=True, mode="json")


def immutable_changes(spec: JobSpec, last: Optional[dict[str, Any]]) -> list[str]:
    """The per-job immutable fields that differ from the spec the job was running on."""
    if not last:
        return []
    now = spec_dump(spec)
    return [f"spec.{key}" for key in IMMUTABLE if now.get(key) != last.get(key)]


def parse_spec(raw: dict[str, Any] | None) -> JobSpec:
    """The spec as a model, or SpecError whose message names each bad field."""
    try:
        return JobSpec.model_validate(dict(raw or {}))
    except ValidationError as err:
        problems = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"])
            problems.append(f"spec.{where}: {e['msg']}" if where else e["msg"].removeprefix("Value error, "))
        raise SpecError("; ".join(problems)) from None


class Status(BaseModel):
    """The CR's status: the operator's only memory between reconciles (it is the sole writer).

    Nested sections (children, partitions, samples, progress, checkpoint, eventLog) are
    plain dicts whose shape the CRD schema documents; status.py fills them."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    # Pending | Provisioning | Running | Retrying | Stopping | Stopped | Succeeded | Failed
    phase: Optional[str] = None
    reason: Optional[str] = None
    message: Optional[str] = None
    observed_generation: Optional[int] = None
    job_id: Optional[str] = None
    attempt: int = 0  # driver attempt; the driver pod's name ends with it
    failures: int = 0  # failed attempts, counted against spec.backoffLimit
    exit_code: Optional[int] = None  # of the last finished driver
    children: Optional[dict[str, Any]] = None
    partitions: Optional[dict[str, Any]] = None
    samples: Optional[dict[str, Any]] = None
    progress: Optional[dict[str, Any]] = None
    checkpoint: Optional[dict[str, Any]] = None
    event_log: Optional[dict[str, Any]] = None
    start_time: Optional[str] = None
    completion_time: Optional[str] = None
    next_attempt_after: Optional[str] = None
    provisioning_since: Optional[str] = None
    # A failure decided while the driver still runs: the job is Stopping until the driver
    # has checkpointed and exited (it needs its RayCluster for that), then Failed.
    pending_failure: Optional[dict[str, Any]] = None
    starting_since: Optional[str] = None  # when this attempt's driver was first asked for
    # The spec the job runs on: a later edit that is invalid leaves the job on this one.
    last_valid_spec: Optional[dict[str, Any]] = None
    last_transition_time: Optional[str] = None
    conditions: Optional[list[dict[str, Any]]] = None
    # In-cluster URLs: the job dashboard (the driver's progress port, through <job>-dashboard)
    # and, for the ray executors, the Ray dashboard on the head Service.
    dashboard_url: Optional[str] = Field(None, alias="dashboardURL")
    ray_dashboard_url: Optional[str] = Field(None, alias="rayDashboardURL")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


def parse_status(raw: dict[str, Any] | None) -> Status:
    """Tolerant: a hand-edited or foreign status never blocks reconciliation."""
    try:
        return Status.model_validate(dict(raw or {}))
    except ValidationError:
        return Status()


@dataclass(frozen=True)
class Job:
    """A DataJuicerJob as the builders see it: identity plus a valid spec."""

    name: str
    namespace: str
    uid: str
    spec: JobSpec

    @property
    def job_id(self) -> str:
        """The engine's job id: stable across attempts (so resume finds the checkpoints),
        new for a re-created CR unless spec.jobId pins it."""
        return self.spec.job_id or f"{self.name[:119]}-{self.uid[:8]}"
