"""What a DataJuicerJob should own, as plain manifests.                           [pure]

recipe ConfigMap (inline recipes) -> state PVC (event log + work dir, on fast storage)
-> Ray auth Secret + RayCluster (ray executors only) -> driver Pod (one per attempt, runs
`dj-process`).

The driver always gets the same --job_id, so attempt n+1 resumes from the checkpoints
attempt n left in object storage, and the same state volume, so it finds its events.

Over 300 lines: one builder per child kind (ConfigMap, PVC, Secret, RayCluster, driver Pod,
Service), which share the naming, labels and pod security settings defined here."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Optional

import yaml

from .crd import API_VERSION, KIND, KUEUE_QUEUE_LABEL, RAY_GROUP, RAY_VERSION, Job, SchedulingSpec
from .settings import Settings

RECIPE_MOUNT = "/dj/recipe"
RECIPE_FILE = "recipe.yaml"
STATE_MOUNT = "/dj/state"
EVENTS_DIR = f"{STATE_MOUNT}/events"
WORK_DIR = f"{STATE_MOUNT}/work"

LABEL_JOB = "datajuicer.io/job"
LABEL_JOB_UID = "datajuicer.io/job-uid"
LABEL_COMPONENT = "datajuicer.io/component"
LABEL_ATTEMPT = "datajuicer.io/attempt"
# The RayCluster's spec as the operator made it, hashed: a spec.ray or spec.storage change
# shows as a different hash, and the cluster is replaced before the next attempt.
ANNOTATION_CLUSTER_HASH = "datajuicer.io/cluster-spec-hash"
MANAGED_BY = {"app.kubernetes.io/managed-by": "dj-operator", "app.kubernetes.io/name": "datajuicer"}

RAY_CLIENT_PORT = 10001
RAY_AUTH_KEY = "auth_token"  # the key KubeRay's own authOptions.secretName Secrets use
RAY_DASHBOARD_PORT = 8265
DASHBOARD_PORT_NAME = "dashboard"  # the driver's progress port: /progress, its dashboard and /metrics
ATTEMPT_ENV = "DJ_ATTEMPT"  # the driver's attempt number, so a stale attempt can be told apart
MODELS_ENV = "DATA_JUICER_MODELS_CACHE"  # where DataJuicer (and the worker) look for model files
RUN_AS = 1000  # the image's non-root user; fsGroup makes the state volume writable for it
# PodSecurity "restricted": set at pod and container level alike, so a container KubeRay
# adds (the autoscaler) or a policy that checks containers alone still sees it.
SECCOMP = {"type": "RuntimeDefault"}
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
                "seccompProfile": SECCOMP}
CONTAINER_SECURITY = {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                      "capabilities": {"drop": ["ALL"]}, "seccompProfile": SECCOMP}
# dj-process writes its outcome (one scrubbed JSON line) here; the kubelet puts it in the
# container's terminated state, falling back to the log tail when the driver died silently.
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
BASE_MAX = 40  # leaves room for "-driver-<attempt>" (63) and KubeRay's suffixes on "-ray" (53)


@dataclass(frozen=True)
class ChildNames:
    base: str  # also the value of the datajuicer.io/job label
    driver: str
    ray: str
    recipe: str
    state: str
    ray_auth: str
    dashboard: str


def names(job_name: str, attempt: int) -> ChildNames:
    """Every child's name, from the CR name and the attempt only (so reconciles agree).

    A name that is too long, or not a DNS-1035 label (dots, leading digit; KubeRay
    derives Service names from the RayCluster's), is shortened and gets a hash of the
    original, so two CRs never share children."""
    base = re.sub(r"[^a-z0-9-]+", "-", job_name.lower()).strip("-")
    if not base[:1].isalpha():
        base = f"dj-{base}"
    if base != job_name or len(base) > BASE_MAX:
        digest = hashlib.sha256(job_name.encode()).hexdigest()[:8]
        base = f"{base[:BASE_MAX - 9].rstrip('-')}-{digest}"
    return ChildNames(
        base=base,
        driver=f"{base}-driver-{attempt}",
        ray=f"{base}-ray",
        recipe=f"{base}-recipe",
        state=f"{base}-state",
        ray_auth=f"{base}-ray-auth",
        dashboard=f"{base}-dashboard",
    )


def child_names(job: Job, attempt: int) -> dict[str, Any]:
    """status.children: what this attempt owns or mounts, by name (None: not used)."""
    n, spec = names(job.name, attempt), job.spec
    log = spec.event_log
    return {
        "driverPod": n.driver,
        "rayCluster": n.ray if spec.is_ray else None,
        "recipeConfigMap": spec.recipe_config_map.name if spec.recipe_config_map else n.recipe,
        "eventLogClaim": None if log.empty_dir else (log.claim_name or n.state),
    }


def core_ref(kind: str, namespace: str, name: str) -> dict[str, Any]:
    """A core (v1) object's identity, enough to delete it."""
    return {"apiVersion": "v1", "kind": kind, "namespace": namespace, "name": name}


def pod_ref(namespace: str, name: str) -> dict[str, Any]:
    return core_ref("Pod", namespace, name)


def ray_auth_ref(namespace: str, job_name: str) -> dict[str, Any]:
    return core_ref("Secret", namespace, names(job_name, 0).ray_auth)


def ray_cluster_ref(namespace: str, name: str) -> dict[str, Any]:
    return {"apiVersion": f"{RAY_GROUP}/{RAY_VERSION}", "kind": "RayCluster", "namespace": namespace, "name": name}


def job_ref(namespace: str, name: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "namespace": namespace, "name": name}


def labels(job: Job, component: str) -> dict[str, str]:
    return {
        **MANAGED_BY,
        LABEL_JOB: names(job.name, 0).base,
        LABEL_JOB_UID: job.uid,
        LABEL_COMPONENT: component,
    }


def owner_reference(job: Job) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": job.name, "uid": job.uid,
            "controller": True, "blockOwnerDeletion": True}


def metadata(job: Job, name: str, component: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": job.namespace, "labels": {**labels(job, component), **(extra_labels or {})},
            "ownerReferences": [owner_reference(job)]}


def recipe_config_map(job: Job) -> Optional[dict[str, Any]]:
    """The inline recipe as a file; None when the user brings their own ConfigMap."""
    if job.spec.recipe is None:
        return None
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": metadata(job, names(job.name, 0).recipe, "recipe"),
        "data": {RECIPE_FILE: yaml.safe_dump(job.spec.recipe, sort_keys=False)},
    }


def state_pvc(job: Job) -> Optional[dict[str, Any]]:
    """The operator-created fast volume; None for an existing claim or emptyDir."""
    log = job.spec.event_log
    if log.claim_name or log.empty_dir:
        return None
    spec: dict[str, Any] = {"accessModes": list(log.access_modes), "resources": {"requests": {"storage": log.size}}}
    if log.storage_class_name:
        spec["storageClassName"] = log.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": metadata(job, names(job.name, 0).state, "state"), "spec": spec}


def storage_env(job: Job) -> list[dict[str, Any]]:
    """The standard AWS variables: endpoint and region as values, credentials by Secret reference."""
    s3 = job.spec.storage.s3
    env: list[dict[str, Any]] = []
    if s3.endpoint_url:
        env.append({"name": "AWS_ENDPOINT_URL", "value": s3.endpoint_url})
    if s3.region:
        env.append({"name": "AWS_DEFAULT_REGION", "value": s3.region})
    if s3.secret_ref:
        for var, key in (("AWS_ACCESS_KEY_ID", s3.secret_ref.access_key_id_key),
                         ("AWS_SECRET_ACCESS_KEY", s3.secret_ref.secret_access_key_key)):
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": s3.secret_ref.name, "key": key}}})
    return env


def ray_auth_secret(job: Job, token: str) -> Optional[dict[str, Any]]:
    """The token every member of the job's Ray cluster, and only they, present (Ray's token
    authentication); None for executor `default`. The caller draws the token at random."""
    if not job.spec.is_ray:
        return None
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": metadata(job, names(job.name, 0).ray_auth, "ray-auth"),
            "stringData": {RAY_AUTH_KEY: token}}


def ray_auth_env(job: Job) -> list[dict[str, Any]]:
    """Token auth for head, workers and driver alike (Ray never turns it on by itself for a
    driver that connects to an explicit address). Set as plain env, it works on every
    KubeRay version, with or without KubeRay's own authOptions."""
    ref = {"secretKeyRef": {"name": names(job.name, 0).ray_auth, "key": RAY_AUTH_KEY}}
    return [{"name": "RAY_AUTH_MODE", "value": "token"}, {"name": "RAY_AUTH_TOKEN", "valueFrom": ref}]


def image(job: Job, settings: Settings) -> str:
    return job.spec.image or settings.image


def scheduling(job: Job, more: Optional[SchedulingSpec]) -> SchedulingSpec:
    return job.spec.scheduling.merged(more)


def place(pod_spec: dict[str, Any], sched: SchedulingSpec) -> dict[str, Any]:
    """pod_spec with the scheduling fields that are set (in place, and returned)."""
    if sched.node_selector:
        pod_spec["nodeSelector"] = {**pod_spec.get("nodeSelector", {}), **sched.node_selector}
    if sched.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in sched.tolerations]
    if sched.affinity:
        pod_spec["affinity"] = dict(sched.affinity)
    if sched.priority_class_name:
        pod_spec["priorityClassName"] = sched.priority_class_name
    if sched.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [dict(s) for s in sched.image_pull_secrets]
    return pod_spec


def pod_metadata(job: Job, component: str, sched: SchedulingSpec, extra: dict[str, str] | None = None,
                 queue: bool = False) -> dict[str, Any]:
    """Labels and annotations of a pod (or pod template): the user's, then the operator's,
    which win (the user's cannot name a reserved key: crd.SchedulingSpec refuses them)."""
    meta: dict[str, Any] = {"labels": {**sched.labels, **labels(job, component), **(extra or {})}}
    if queue and job.spec.queue_name:
        meta["labels"][KUEUE_QUEUE_LABEL] = job.spec.queue_name
    if sched.annotations:
        meta["annotations"] = dict(sched.annotations)
    return meta


MODELS_VOLUME = "models"
# Copies the prefix with fsspec/s3fs (in every job image); the endpoint and credentials
# come from the AWS_* env, as for the job itself. A trailing "/" copies the contents.
SYNC_MODELS = ("import sys, fsspec; fs, root = fsspec.core.url_to_fs(sys.argv[1]); "
               "fs.get(root.rstrip('/') + '/', sys.argv[2].rstrip('/') + '/', recursive=True); "
               "print('models from', sys.argv[1], 'in', sys.argv[2])")


def models_volume(job: Job) -> Optional[dict[str, Any]]:
    models = job.spec.models
    if models is None:
        return None
    if models.claim_name:
        return {"name": MODELS_VOLUME, "persistentVolumeClaim": {"claimName": models.claim_name, "readOnly": True}}
    return {"name": MODELS_VOLUME, "emptyDir": {"sizeLimit": models.size_limit} if models.size_limit else {}}


def models_mount(job: Job) -> list[dict[str, Any]]:
    models = job.spec.models
    if models is None:
        return []
    mount = {"name": MODELS_VOLUME, "mountPath": models.mount_path, "readOnly": True}
    if models.sub_path:
        mount["subPath"] = models.sub_path
    return [mount]


def models_env(job: Job) -> list[dict[str, Any]]:
    models = job.spec.models
    return [] if models is None else [{"name": MODELS_ENV, "value": models.mount_path}]


def models_init_containers(job: Job, container_image: str) -> list[dict[str, Any]]:
    """For spec.models.s3Prefix: one init container that copies the prefix into the pod's
    models volume before the job's container starts (and fails the start if it cannot)."""
    models = job.spec.models
    if models is None or not models.s3_prefix:
        return []
    init: dict[str, Any] = {"name": "models-sync", "image": container_image, "command": ["python", "-c", SYNC_MODELS],
                            "args": [models.s3_prefix, models.mount_path], "securityContext": CONTAINER_SECURITY,
                            "volumeMounts": [{"name": MODELS_VOLUME, "mountPath": models.mount_path}]}
    if storage_env(job):
        init["env"] = storage_env(job)
    return [init]


def with_models(job: Job, pod_spec: dict[str, Any], container_image: str) -> dict[str, Any]:
    """pod_spec with the models volume mounted into its containers (in place, and returned)."""
    volume = models_volume(job)
    if volume is None:
        return pod_spec
    pod_spec["volumes"] = [*pod_spec.get("volumes", []), volume]
    for c in pod_spec["containers"]:
        c["volumeMounts"] = [*c.get("volumeMounts", []), *models_mount(job)]
        c["env"] = [*c.get("env", []), *models_env(job)]
    init = models_init_containers(job, container_image)
    if init:
        pod_spec["initContainers"] = [*pod_spec.get("initContainers", []), *init]
    return pod_spec


def ray_cluster(job: Job, settings: Settings) -> Optional[dict[str, Any]]:
    """A KubeRay RayCluster (ray.io/v1) for the ray executors; None for executor `default`.
    Head and workers get the S3 env too: Ray tasks read and write partitions themselves."""
    if not job.spec.is_ray:
        return None
    ray = job.spec.ray
    ray_image = ray.image or image(job, settings)
    env = storage_env(job) + ray_auth_env(job)

    def template(container: str, resources: dict[str, Any], ports: list[dict[str, Any]],
                 more: Optional[SchedulingSpec]) -> dict[str, Any]:
        c: dict[str, Any] = {"name": container, "image": ray_image, "env": list(env),
                             "securityContext": CONTAINER_SECURITY}
        if resources:
            c["resources"] = resources
        if ports:
            c["ports"] = ports
        sched = scheduling(job, more)
        pod_spec = place({"securityContext": POD_SECURITY, "containers": [c]}, sched)
        return {"metadata": pod_metadata(job, "ray", sched), "spec": with_models(job, pod_spec, ray_image)}

    head_ports = [{"name": "gcs", "containerPort": 6379}, {"name": "dashboard", "containerPort": RAY_DASHBOARD_PORT},
                  {"name": "client", "containerPort": RAY_CLIENT_PORT}]
    workers = []
    for group in ray.worker_groups:
        low = group.replicas if group.min_replicas is None else group.min_replicas
        high = max(group.replicas, low) if group.max_replicas is None else group.max_replicas
        workers.append({
            "groupName": group.name, "replicas": group.replicas, "minReplicas": low, "maxReplicas": high,
            "rayStartParams": dict(group.ray_start_params),
            "template": template("ray-worker", group.resources, [], group.scheduling),
        })
    meta = metadata(job, names(job.name, 0).ray, "ray")
    if job.spec.queue_name:  # Kueue admits (unsuspends) the whole cluster; the driver waits for it
        meta["labels"][KUEUE_QUEUE_LABEL] = job.spec.queue_name
    cluster = {
        "apiVersion": f"{RAY_GROUP}/{RAY_VERSION}", "kind": "RayCluster",
        "metadata": meta,
        "spec": {
            "rayVersion": ray.ray_version,
            "enableInTreeAutoscaling": ray.autoscaling,
            "headGroupSpec": {
                "rayStartParams": {"dashboard-host": "0.0.0.0", **ray.head.ray_start_params},
                "template": template("ray-head", ray.head.resources, head_ports, ray.head.scheduling),
            },
            "workerGroupSpecs": workers,
            # KubeRay adds the autoscaler as a container of its own: it must present the token
            # too, and pass the restricted profile like the rest
            **({"autoscalerOptions": {"env": ray_auth_env(job), "securityContext": CONTAINER_SECURITY}}
               if ray.autoscaling else {}),
        },
    }
    cluster["metadata"].setdefault("annotations", {})[ANNOTATION_CLUSTER_HASH] = cluster_hash(cluster)
    return cluster


def cluster_hash(cluster: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cluster["spec"], sort_keys=True).encode()).hexdigest()[:16]


def ray_dashboard_url(job: Job) -> Optional[str]:
    """The Ray dashboard, on the head Service KubeRay creates; None for executor `default`."""
    if not job.spec.is_ray:
        return None
    return f"http://{names(job.name, 0).ray}-head-svc.{job.namespace}.svc:{RAY_DASHBOARD_PORT}"


def dashboard_url(job: Job, settings: Settings) -> str:
    """The job dashboard (the driver's progress port) through the <job>-dashboard Service."""
    return f"http://{names(job.name, 0).dashboard}.{job.namespace}.svc:{settings.progress_port}"


def dashboard_service(job: Job, settings: Settings) -> dict[str, Any]:
    """A stable address for whichever attempt's driver runs: it selects the job's driver
    pods by label, so it outlives attempts and needs no update when the driver changes."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": metadata(job, names(job.name, 0).dashboard, "dashboard"),
        "spec": {"selector": {LABEL_JOB_UID: job.uid, LABEL_COMPONENT: "driver"},
                 "ports": [{"name": DASHBOARD_PORT_NAME, "port": settings.progress_port,
                            "targetPort": DASHBOARD_PORT_NAME, "protocol": "TCP"}]},
    }


def ray_address(job: Job) -> str:
    """The Ray Client address of the job's cluster, through the head Service KubeRay creates."""
    return f"ray://{names(job.name, 0).ray}-head-svc.{job.namespace}.svc:{RAY_CLIENT_PORT}"


def driver_args(job: Job, settings: Settings) -> list[str]:
    """dj-process flags: paths on the mounted volumes, then the spec's overrides, in a fixed order."""
    spec = job.spec
    args = ["--config", f"{RECIPE_MOUNT}/{RECIPE_FILE}", "--job_id", job.job_id,
            "--progress-port", str(settings.progress_port), "--event_log_dir", EVENTS_DIR,
            "--work_dir", spec.work_dir or WORK_DIR, "--executor_type", spec.executor_type]
    for flag, value in (("--dataset_path", spec.dataset_path), ("--export_path", spec.export_path),
                        ("--checkpoint_dir", spec.checkpoint_dir)):
        if value:
            args += [flag, value]
    cp = spec.checkpoint
    if cp.strategy:
        args += ["--checkpoint.strategy", cp.strategy]
    if cp.n_ops is not None:
        args += ["--checkpoint.n_ops", str(cp.n_ops)]
    if cp.op_names:
        args += ["--checkpoint.op_names", ",".join(cp.op_names)]
    if spec.cleanup.checkpoint_retention:
        args += ["--intermediate_storage.retention_policy", spec.cleanup.checkpoint_retention]
    for key in sorted(spec.overrides):
        args += [f"--{key}", spec.overrides[key]]
    return args


def state_volume(job: Job) -> dict[str, Any]:
    log = job.spec.event_log
    if log.empty_dir:
        return {"name": "state", "emptyDir": {}}
    return {"name": "state", "persistentVolumeClaim": {"claimName": log.claim_name or names(job.name, 0).state}}


def recipe_volume(job: Job) -> dict[str, Any]:
    ref = job.spec.recipe_config_map
    cm_name, key = (ref.name, ref.key) if ref else (names(job.name, 0).recipe, RECIPE_FILE)
    return {"name": "recipe", "configMap": {"name": cm_name, "items": [{"key": key, "path": RECIPE_FILE}]}}


def driver_pod(job: Job, attempt: int, settings: Settings) -> dict[str, Any]:
    """The driver of one attempt. restartPolicy Never: the operator, not the kubelet,
    decides on retries, because only it knows which exit codes are worth retrying."""
    spec = job.spec
    env = storage_env(job)
    if spec.is_ray:
        env += [{"name": "RAY_ADDRESS", "value": ray_address(job)}, *ray_auth_env(job)]
    env += [{"name": "DJ_TERMINATION_MESSAGE_PATH", "value": TERMINATION_MESSAGE_PATH}]
    env += [{"name": ATTEMPT_ENV, "value": str(attempt)}, *models_env(job)]
    env += [dict(e) for e in spec.driver.env]
    container: dict[str, Any] = {
        "name": "driver",
        "image": image(job, settings),
        "command": list(settings.driver_command),
        "args": driver_args(job, settings),
        "env": env,
        "ports": [{"name": DASHBOARD_PORT_NAME, "containerPort": settings.progress_port, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": DASHBOARD_PORT_NAME}, "periodSeconds": 10},
        "securityContext": CONTAINER_SECURITY,
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "recipe", "mountPath": RECIPE_MOUNT, "readOnly": True},
                         {"name": "state", "mountPath": STATE_MOUNT}, *models_mount(job)],
    }
    if spec.driver.resources:
        container["resources"] = spec.driver.resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # the driver never calls the Kubernetes API
        "securityContext": POD_SECURITY,
        "terminationGracePeriodSeconds": spec.driver.termination_grace_period_seconds,
        "containers": [container],
        "volumes": [recipe_volume(job), state_volume(job), *filter(None, [models_volume(job)])],
    }
    init = models_init_containers(job, container["image"])
    if init:
        pod_spec["initContainers"] = init
    if spec.driver.service_account_name:
        pod_spec["serviceAccountName"] = spec.driver.service_account_name
    if spec.driver.node_selector:
        pod_spec["nodeSelector"] = dict(spec.driver.node_selector)
    sched = scheduling(job, spec.driver.scheduling)
    place(pod_spec, sched)
    meta = metadata(job, names(job.name, attempt).driver, "driver", {LABEL_ATTEMPT: str(attempt)})
    # Without a RayCluster the driver pod is what Kueue admits (its pod integration)
    meta.update(pod_metadata(job, "driver", sched, {LABEL_ATTEMPT: str(attempt)}, queue=not spec.is_ray))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}


def desired_children(job: Job, attempt: int, settings: Settings, token: str) -> list[dict[str, Any]]:
    """Everything the job owns while it runs, in creation order (the pod mounts the others)."""
    found = [recipe_config_map(job), state_pvc(job), dashboard_service(job, settings), ray_auth_secret(job, token),
             ray_cluster(job, settings), driver_pod(job, attempt, settings)]
    return [child for child in found if child is not None]


def ref(manifest: dict[str, Any]) -> dict[str, str]:
    """The identity of a child, enough to get or delete it."""
    meta = manifest["metadata"]
    return {"apiVersion": manifest["apiVersion"], "kind": manifest["kind"],
            "namespace": meta["namespace"], "name": meta["name"]}
