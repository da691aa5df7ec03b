"""A KubeRay stand-in for the local cluster: KubeRay itself is a Go operator whose modules
cannot be fetched here, so this controller does, for the fields dj-operator emits, what
KubeRay's RayCluster controller does: it makes real Pods and a real Service, and the real
scheduler, kubelet, kube-proxy and garbage collector do the rest.

For every RayCluster (ray.io/v1, any namespace) that is not being deleted:
  * a head Pod from spec.headGroupSpec.template, named <cluster>-head-<random>, whose first
    container runs `ray start --head --block --dashboard-host=0.0.0.0 ...` with
    rayStartParams as --key=value flags and --num-cpus/--memory from its limits, as KubeRay does;
  * the <cluster>-head-svc Service (ClusterIP) with the head container's ports, or KubeRay's
    defaults (gcs 6379, dashboard 8265, client 10001);
  * per worker group, `replicas` Pods from its template, named <cluster>-<group>-worker-<random>,
    running `ray start --address=<cluster>-head-svc.<ns>.svc.cluster.local:6379 --block ...`;
  * KubeRay's labels (ray.io/cluster, ray.io/node-type, ray.io/group, ray.io/is-ray-node) and
    env (RAY_CLUSTER_NAME, RAY_CLOUD_INSTANCE_ID, RAY_NODE_TYPE_NAME, RAY_PORT, RAY_ADDRESS on
    the head, RAY_IP/FQ_RAY_IP on workers, MY_POD_IP, KUBERAY_GEN_RAY_START_CMD), and the
    /dev/shm memory volume KubeRay mounts for the object store;
  * a controller ownerReference to the RayCluster on every Pod and the Service, so the real
    garbage collector deletes them with it;
  * status.state "ready" once every Pod runs (and "" again when one does not).

Simplifications (none of them is something dj-operator relies on):
  * polls every second instead of watching; reconciles one cluster at a time;
  * the container command is `/bin/bash -c` rather than KubeRay's `/bin/bash -lc`: a login
    shell resets PATH on Debian and would hide the image's Python environment;
  * no init container waiting for the GCS (`ray start` on a worker retries on its own, and the
    kubelet restarts it: pods get restartPolicy Always unless the template says otherwise);
  * no autoscaler sidecar (enableInTreeAutoscaling is ignored: replicas are what runs), no
    suspend, no Ray job/serve CRDs; status has only state, the worker replica counts and head.podIP;
  * failed or deleted Pods are replaced, but changes to a template after creation are not
    rolled out.
"""
from __future__ import annotations

import copy
import threading
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayclusters"
GCS_PORT = 6379
DEFAULT_HEAD_PORTS = [{"name": "gcs", "containerPort": GCS_PORT}, {"name": "dashboard", "containerPort": 8265},
                      {"name": "client", "containerPort": 10001}]


def _quantity_bytes(value: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * factor)
    return int(float(value))


def _cpus(value: str) -> int:
    cpus = float(value[:-1]) / 1000 if value.endswith("m") else float(value)
    return max(1, int(cpus))  # KubeRay rounds fractional CPUs the same way for --num-cpus


def start_command(head: bool, params: dict[str, Any], container: dict[str, Any], address: str) -> str:
    """The `ray start` line KubeRay generates for a head or worker container."""
    params = {k: str(v) for k, v in params.items()}
    limits = (container.get("resources") or {}).get("limits") or {}
    if "num-cpus" not in params and "cpu" in limits:
        params["num-cpus"] = str(_cpus(str(limits["cpu"])))
    if "memory" not in params and "memory" in limits:
        params["memory"] = str(_quantity_bytes(str(limits["memory"])))
    words = ["ray", "start"] + (["--head"] if head else [f"--address={address}"]) + ["--block"]
    words += [f"--{key}={value}" for key, value in sorted(params.items())]
    return " ".join(words)


def owner_reference(cluster: dict[str, Any]) -> dict[str, Any]:
    meta = cluster["metadata"]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RayCluster", "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def head_service_name(cluster_name: str) -> str:
    return f"{cluster_name}-head-svc"


def ray_pod(cluster: dict[str, Any], group: str, template: dict[str, Any], params: dict[str, Any],
            head: bool) -> dict[str, Any]:
    meta = cluster["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    svc_fqdn = f"{head_service_name(name)}.{namespace}.svc.cluster.local"
    pod = copy.deepcopy(template)
    labels = {**(pod.get("metadata") or {}).get("labels", {}), "ray.io/cluster": name,
              "ray.io/node-type": "head" if head else "worker", "ray.io/group": group,
              "ray.io/is-ray-node": "yes"}
    pod["metadata"] = {"generateName": f"{name}-head-" if head else f"{name}-{group}-worker-",
                       "namespace": namespace, "labels": labels, "ownerReferences": [owner_reference(cluster)]}
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    container = spec["containers"][0]
    command = start_command(head, params, container, f"{svc_fqdn}:{GCS_PORT}")
    container["command"] = ["/bin/bash", "-c", "--"]
    container["args"] = [f"ulimit -n 65536 2>/dev/null; exec {command}"]  # ray gets the SIGTERM
    env = [{"name": "RAY_CLUSTER_NAME", "value": name},
           {"name": "RAY_CLOUD_INSTANCE_ID", "value": name},
           {"name": "RAY_NODE_TYPE_NAME", "value": group},
           {"name": "KUBERAY_GEN_RAY_START_CMD", "value": command},
           {"name": "RAY_PORT", "value": str(GCS_PORT)},
           {"name": "MY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    if head:
        env.append({"name": "RAY_ADDRESS", "value": f"127.0.0.1:{GCS_PORT}"})
        container.setdefault("ports", copy.deepcopy(DEFAULT_HEAD_PORTS))
    else:
        env += [{"name": "RAY_IP", "value": head_service_name(name)}, {"name": "FQ_RAY_IP", "value": svc_fqdn}]
    container["env"] = env + list(container.get("env") or [])
    spec.setdefault("volumes", []).append({"name": "shared-mem", "emptyDir": {"medium": "Memory"}})
    container.setdefault("volumeMounts", []).append({"name": "shared-mem", "mountPath": "/dev/shm"})
    return pod


def head_service(cluster: dict[str, Any]) -> dict[str, Any]:
    meta = cluster["metadata"]
    container = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    ports = container.get("ports") or DEFAULT_HEAD_PORTS
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": head_service_name(meta["name"]), "namespace": meta["namespace"],
                         "labels": {"ray.io/cluster": meta["name"], "ray.io/node-type": "head"},
                         "ownerReferences": [owner_reference(cluster)]},
            "spec": {"selector": {"ray.io/cluster": meta["name"], "ray.io/node-type": "head"},
                     "ports": [{"name": p.get("name") or str(p["containerPort"]), "port": p["containerPort"],
                                "targetPort": p["containerPort"]} for p in ports]}}


class KubeRayStandIn:
    """Reconciles every RayCluster in a loop on a daemon thread; start() and stop()."""

    def __init__(self, api_client: client.ApiClient, period_s: float = 1.0) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.period_s = period_s
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kuberay-stand-in", daemon=True)

    def start(self) -> "KubeRayStandIn":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for cluster in self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]:
                    if not cluster["metadata"].get("deletionTimestamp"):
                        self.reconcile(cluster)
            except ApiException as err:  # a conflict or a namespace going away: next round
                if err.status not in (404, 409):
                    self.errors.append(f"{err.status}: {err.reason}")
            except Exception as err:  # noqa: BLE001 - keep reconciling; tests read .errors
                self.errors.append(repr(err))
            self._stop.wait(self.period_s)

    def reconcile(self, cluster: dict[str, Any]) -> None:
        meta = cluster["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        try:
            self.core.read_namespaced_service(head_service_name(name), namespace)
        except ApiException as err:
            if err.status != 404:
                raise
            self.core.create_namespaced_service(namespace, head_service(cluster))
        pods = [p for p in self.core.list_namespaced_pod(namespace, label_selector=f"ray.io/cluster={name}").items
                if p.metadata.deletion_timestamp is None]
        for pod in pods:  # a Ray node that ended is replaced, as KubeRay does
            if pod.status.phase in ("Failed", "Succeeded"):
                self.core.delete_namespaced_pod(pod.metadata.name, namespace)
        pods = [p for p in pods if p.status.phase not in ("Failed", "Succeeded")]
        head_spec = cluster["spec"]["headGroupSpec"]
        wanted = [("headgroup", head_spec, True, 1)]
        for group in cluster["spec"].get("workerGroupSpecs") or []:
            wanted.append((group["groupName"], group, False, int(group.get("replicas", 1))))
        for group, group_spec, head, replicas in wanted:
            mine = [p for p in pods if p.metadata.labels.get("ray.io/group") == group
                    and p.metadata.labels.get("ray.io/node-type") == ("head" if head else "worker")]
            for _ in range(replicas - len(mine)):
                pod = ray_pod(cluster, group, group_spec["template"], group_spec.get("rayStartParams") or {}, head)
                self.core.create_namespaced_pod(namespace, pod)
        total = sum(replicas for *_, replicas in wanted)
        running = [p for p in pods if p.status.phase == "Running"]
        ready = len(running) == total
        head_ip = next((p.status.pod_ip for p in running if p.metadata.labels.get("ray.io/node-type") == "head"), None)
        status = {"state": "ready" if ready else "", "availableWorkerReplicas": len(running) - (1 if head_ip else 0),
                  "desiredWorkerReplicas": total - 1, **({"head": {"podIP": head_ip}} if head_ip else {})}
        current = cluster.get("status") or {}
        if any(current.get(k) != v for k, v in status.items()):
            self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name,
                                                              {"status": status})

