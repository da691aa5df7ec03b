"""A test node agent: plays kubelet and KubeRay for the operator tests (test code only).

The test apiserver has no kubelet, scheduler or KubeRay, so pods would stay Pending and
RayClusters would never be ready. For the namespaces it is given, this agent:

* binds each new pod to the node `dj-test-node` (bound pods get graceful deletion), then
  runs its first container's command + args as a local subprocess (its own session);
* materialises volumes under `root/<namespace>/`: a configMap/secret volume becomes files
  (items honoured), a persistentVolumeClaim is a directory per claim that outlives pods
  (as a real PVC does), an emptyDir a directory per pod. A container path is mapped to the
  host by *prefix rewriting*: any argument, env value or workingDir that starts with a
  volume's mountPath is rewritten to the volume's host directory;
* gives the process the pod's env: value, secretKeyRef, configMapKeyRef and fieldRef
  (metadata.name/namespace, status.podIP), on top of PATH (the running interpreter's bin
  first, so `dj-process` is the venv's), HOME, LANG and TMPDIR. Nothing else leaks in;
* as every driver wants the same progress port, rewrites `--progress-port N` to a free
  loopback port and publishes `http://127.0.0.1:<port>` in the pod annotation
  PROGRESS_ANNOTATION; the operator reads it when started with
  `--progress-endpoint-annotation datajuicer.io/progress-endpoint`;
* reports status like a kubelet: Running with podIP 127.0.0.1, then Succeeded/Failed with
  the container's exit code (128+signal when killed by a signal). The termination message
  is what the container wrote to its terminationMessagePath (a per-pod file, "mounted"
  by the same prefix rewriting), else, only under FallbackToLogsOnError and a non-zero
  exit, the last 80 lines / 2048 bytes of its output; otherwise there is none;
* on pod deletion: SIGTERM to the main process, waits the grace period, SIGKILLs the
  process group, reports the exit, then finalises the delete (grace 0), as kubelet does;
* marks RayClusters `status.state: ready` (unless `rayclusters_ready` is False) and, when
  given `ray_address`, points pods' RAY_ADDRESS at that local Ray instead of the head
  Service, which does not exist here.
"""
from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ApiException, NotFoundError

from tests.support.k8s import free_port

log = logging.getLogger(__name__)

NODE = "dj-test-node"
PROGRESS_ANNOTATION = "datajuicer.io/progress-endpoint"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Running:
    """One pod's process, as the agent tracks it."""

    namespace: str
    name: str
    uid: str
    proc: subprocess.Popen
    dir: Path
    log_path: Path
    started: str
    term_sent_at: Optional[float] = None
    grace: float = 30.0
    exit_reported: bool = False
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    termination_file: Optional[Path] = None
    termination_policy: str = "File"

    def exit_code(self) -> Optional[int]:
        code = self.proc.poll()
        if code is None:
            return None
        return 128 - code if code < 0 else code  # killed by signal n: 128+n, as kubelet reports


class NodeAgent:
    def __init__(self, api_client: Any, root: Path, ray_address: Optional[str] = None, poll_seconds: float = 0.25):
        self.dyn = DynamicClient(api_client)
        self.pods = self.dyn.resources.get(api_version="v1", kind="Pod")
        self.root = root
        self.ray_address = ray_address
        self.poll_seconds = poll_seconds
        self.rayclusters_ready = True
        self.namespaces: set[str] = set()
        self.running: dict[str, Running] = {}  # by pod uid
        self.started_pods: list[tuple[str, str]] = []  # (namespace, name), in start order
        self.exits: dict[tuple[str, str], int] = {}  # (namespace, name) -> exit code, as reported
        self.logs: dict[tuple[str, str], Path] = {}  # (namespace, name) -> container output
        self.lost: set[tuple[str, str]] = set()  # pods whose node is "gone": no status, no deletion handling
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="node-agent", daemon=True)
        self._lock = threading.Lock()

    # -- test API -----------------------------------------------------------------

    def start(self) -> "NodeAgent":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops the loop and kills every process it started (by process group)."""
        self._stop.set()
        self._thread.join(timeout=10)
        for run in list(self.running.values()):
            self._signal(run, signal.SIGKILL)
            try:
                run.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def adopt(self, namespace: str) -> None:
        with self._lock:
            self.namespaces.add(namespace)

    def release(self, namespace: str) -> None:
        """Stops serving a namespace and kills what still runs there."""
        with self._lock:
            self.namespaces.discard(namespace)
        for run in [r for r in self.running.values() if r.namespace == namespace]:
            self._signal(run, signal.SIGKILL)

    def process(self, namespace: str, name: str) -> Optional[Running]:
        return next((r for r in self.running.values() if (r.namespace, r.name) == (namespace, name)), None)

    def kill(self, namespace: str, name: str, sig: int = signal.SIGKILL) -> None:
        """Sends sig to the pod's process (SIGKILL: its group), as an OOM kill or a crash would."""
        run = self.process(namespace, name)
        assert run is not None, f"no process for pod {namespace}/{name}"
        self._signal(run, sig)

    def lose_node_of(self, namespace: str, name: str) -> None:
        """As if the pod's node dropped off the network: its process runs on, but nothing
        about it reaches the API any more, and a deletion is never confirmed (only a force
        delete removes the pod; then what is left of the process is killed, as fencing would)."""
        with self._lock:
            self.lost.add((namespace, name))

    def volume_dir(self, namespace: str, claim: str) -> Path:
        """The host directory standing in for a PVC."""
        return self.root / namespace / f"pvc-{claim}"

    # -- loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                namespaces = sorted(self.namespaces)
            for namespace in namespaces:
                try:
                    self._sync_pods(namespace)
                    self._sync_rayclusters(namespace)
                except Exception:  # an apiserver restart or a race must not end the agent
                    log.exception("node agent: sync of %s failed", namespace)
            self._stop.wait(self.poll_seconds)

    def _sync_pods(self, namespace: str) -> None:
        pods = self.pods.get(namespace=namespace).to_dict()["items"]
        seen = set()
        for pod in pods:
            meta = pod["metadata"]
            uid = meta["uid"]
            seen.add(uid)
            run = self.running.get(uid)
            if (namespace, meta["name"]) in self.lost:
                continue
            if meta.get("deletionTimestamp"):
                self._terminate(pod, run)
            elif run is None and not (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                self._start(pod)
            elif run is not None and not run.exit_reported and run.exit_code() is not None:
                self._report_exit(run)
        for uid in [u for u, r in self.running.items() if r.namespace == namespace and u not in seen]:
            run = self.running.pop(uid)  # deleted behind our back (force delete): kill what is left
            self._signal(run, signal.SIGKILL)

    # -- pod lifecycle ------------------------------------------------------------

    def _start(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        if not spec.get("nodeName"):
            self.pods.subresources["binding"].create(
                body={"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                      "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}},
                name=name, namespace=namespace)
        container = spec["containers"][0]
        pod_dir = self.root / namespace / f"pod-{name}-{uid[:8]}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        mounts = self._mounts(namespace, pod_dir, spec, container)
        termination_file = pod_dir / f"{container['name']}.termination-log"
        termination_file.touch()
        mounts.insert(0, (container.get("terminationMessagePath") or "/dev/termination-log", str(termination_file)))
        port = free_port()
        argv = [self._host_path(a, mounts) for a in [*container.get("command", []), *container.get("args", [])]]
        if "--progress-port" in argv:
            argv[argv.index("--progress-port") + 1] = str(port)
        env = self._env(namespace, pod, container, mounts)
        cwd = self._host_path(container["workingDir"], mounts) if container.get("workingDir") else str(pod_dir)
        log_path = pod_dir / f"{container['name']}.log"
        with log_path.open("ab") as out:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        grace = float(spec.get("terminationGracePeriodSeconds", 30))
        run = Running(namespace, name, uid, proc, pod_dir, log_path, _now(), grace=grace, env=env, argv=argv,
                      termination_file=termination_file,
                      termination_policy=container.get("terminationMessagePolicy") or "File")
        self.running[uid] = run
        self.started_pods.append((namespace, name))
        self.logs[(namespace, name)] = log_path
        self.pods.patch(body={"metadata": {"annotations": {PROGRESS_ANNOTATION: f"http://127.0.0.1:{port}"}}},
                        name=name, namespace=namespace, content_type="application/merge-patch+json")
        self._patch_status(run, {"running": {"startedAt": run.started}}, "Running")

    def _report_exit(self, run: Running) -> None:
        code = run.exit_code()
        assert code is not None
        terminated: dict[str, Any] = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                      "startedAt": run.started, "finishedAt": _now()}
        written = run.termination_file.read_text(errors="replace")[:4096] if run.termination_file else ""
        if written.strip():
            terminated["message"] = written
        elif run.termination_policy == "FallbackToLogsOnError" and code != 0:
            tail = run.log_path.read_text(errors="replace").splitlines()[-80:]
            terminated["message"] = "\n".join(tail)[-2048:]
        state = {"terminated": terminated}
        try:
            self._patch_status(run, state, "Succeeded" if code == 0 else "Failed")
        except NotFoundError:
            pass
        run.exit_reported = True
        self.exits[(run.namespace, run.name)] = code

    def _terminate(self, pod: dict[str, Any], run: Optional[Running]) -> None:
        """Graceful deletion, as kubelet does it: TERM, grace period, KILL, then remove."""
        meta = pod["metadata"]
        if run is not None and run.exit_code() is None:
            if run.term_sent_at is None:
                run.grace = float(meta.get("deletionGracePeriodSeconds", run.grace))
                run.term_sent_at = time.monotonic()
                self._signal(run, signal.SIGTERM)
                return
            if time.monotonic() - run.term_sent_at < run.grace:
                return
            self._signal(run, signal.SIGKILL)
            run.proc.wait(timeout=10)
        if run is not None and not run.exit_reported:
            self._report_exit(run)
        try:
            self.pods.delete(name=meta["name"], namespace=meta["namespace"],
                             body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})
        except (NotFoundError, ApiException) as err:
            if getattr(err, "status", 404) not in (404, 409):
                raise
        if run is not None:
            self.running.pop(run.uid, None)

    def _patch_status(self, run: Running, state: dict[str, Any], phase: str) -> None:
        pod = self.pods.get(name=run.name, namespace=run.namespace).to_dict()
        container = pod["spec"]["containers"][0]
        status = {
            "phase": phase, "podIP": "127.0.0.1", "hostIP": "127.0.0.1", "startTime": run.started,
            "containerStatuses": [{"name": container["name"], "image": container.get("image", ""),
                                   "imageID": "", "ready": phase == "Running", "restartCount": 0,
                                   "started": phase == "Running", "state": state}],
        }
        self.pods.subresources["status"].patch(body={"status": status}, name=run.name, namespace=run.namespace,
                                               content_type="application/merge-patch+json")

    @staticmethod
    def _signal(run: Running, sig: int) -> None:
        """SIGTERM reaches the container's main process only, as with a container runtime;
        SIGKILL takes the whole process group, as killing the container's cgroup does."""
        try:
            if sig == signal.SIGKILL:
                os.killpg(run.proc.pid, sig)
            else:
                os.kill(run.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    # -- volumes and env ----------------------------------------------------------

    def _mounts(self, namespace: str, pod_dir: Path, spec: dict[str, Any],
                container: dict[str, Any]) -> list[tuple[str, str]]:
        """(mountPath, host dir) pairs, longest mountPath first so nested mounts win."""
        host: dict[str, Path] = {}
        for volume in spec.get("volumes") or []:
            vname = volume["name"]
            if "persistentVolumeClaim" in volume:
                path = self.volume_dir(namespace, volume["persistentVolumeClaim"]["claimName"])
            else:
                path = pod_dir / "volumes" / vname
            path.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                cm = self.dyn.resources.get(api_version="v1", kind="ConfigMap").get(
                    name=volume["configMap"]["name"], namespace=namespace).to_dict()
                self._write_items(path, cm.get("data") or {}, volume["configMap"].get("items"))
            elif "secret" in volume:
                secret = self.dyn.resources.get(api_version="v1", kind="Secret").get(
                    name=volume["secret"]["secretName"], namespace=namespace).to_dict()
                data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
                self._write_items(path, data, volume["secret"].get("items"))
            host[vname] = path
        pairs = [(m["mountPath"].rstrip("/"), str(host[m["name"]])) for m in container.get("volumeMounts") or []]
        return sorted(pairs, key=lambda p: -len(p[0]))

    @staticmethod
    def _write_items(path: Path, data: dict[str, str], items: Optional[list[dict[str, str]]]) -> None:
        for item in items or [{"key": k, "path": k} for k in data]:
            target = path / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[item["key"]])

    @staticmethod
    def _host_path(value: str, mounts: list[tuple[str, str]]) -> str:
        for mount_path, host in mounts:
            if value == mount_path or value.startswith(mount_path + "/"):
                return host + value[len(mount_path):]
        return value

    def _env(self, namespace: str, pod: dict[str, Any], container: dict[str, Any],
             mounts: list[tuple[str, str]]) -> dict[str, str]:
        env = {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
            "PYTHONUNBUFFERED": "1",
        }
        for var in container.get("env") or []:
            value = self._env_value(namespace, pod, var)
            if value is not None:
                env[var["name"]] = self._host_path(value, mounts)
        if self.ray_address and "RAY_ADDRESS" in env:
            env["RAY_ADDRESS"] = self.ray_address  # the local Ray plays the head Service
        return env

    def _env_value(self, namespace: str, pod: dict[str, Any], var: dict[str, Any]) -> Optional[str]:
        if "value" in var:
            return var["value"]
        source = var.get("valueFrom") or {}
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = self.dyn.resources.get(api_version="v1", kind="Secret").get(
                name=ref["name"], namespace=namespace).to_dict()
            return base64.b64decode(secret["data"][ref["key"]]).decode()
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            cm = self.dyn.resources.get(api_version="v1", kind="ConfigMap").get(
                name=ref["name"], namespace=namespace).to_dict()
            return cm["data"][ref["key"]]
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            return {"metadata.name": pod["metadata"]["name"], "metadata.namespace": namespace,
                    "status.podIP": "127.0.0.1"}.get(path)
        return None

    # -- KubeRay ------------------------------------------------------------------

    def _sync_rayclusters(self, namespace: str) -> None:
        if not self.rayclusters_ready:
            return
        try:
            clusters = self.dyn.resources.get(api_version="ray.io/v1", kind="RayCluster")
        except Exception:
            return  # KubeRay's CRD is not installed in this session
        for cluster in clusters.get(namespace=namespace).to_dict()["items"]:
            meta = cluster["metadata"]
            if meta.get("deletionTimestamp") or (cluster.get("status") or {}).get("state") == "ready":
                continue
            workers = sum(g.get("replicas", 0) for g in cluster["spec"].get("workerGroupSpecs") or [])
            clusters.status.patch(
                body={"status": {"state": "ready", "readyWorkerReplicas": workers,
                                 "availableWorkerReplicas": workers, "desiredWorkerReplicas": workers,
                                 "head": {"podIP": "127.0.0.1", "serviceIP": "127.0.0.1"}}},
                name=meta["name"], namespace=namespace, content_type="application/merge-patch+json")


def cleanup(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
