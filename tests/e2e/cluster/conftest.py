"""The one-node cluster of scripts/local-cluster.sh, set up as a user would: the project's
image (scripts/local-images.sh), the chart rendered with helm-python-sdk and applied with
kubectl (the operator runs as a Pod from that image), the KubeRay stand-in
(tests/support/kuberay.py), moto's S3 on the bridge address where pods reach it, and a
static PersistentVolume for each job's state claim (the cluster has no provisioner).

scripts/test.sh brings the cluster up and sets DJ_REQUIRE_LOCAL_CLUSTER=1, which makes a
missing cluster a failure here; elsewhere these tests skip and say how to run them."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import yaml

from tests.deploy.chart import render
from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "local-cluster.sh"
RAYCLUSTER_CRD = REPO / "tests" / "data" / "kuberay" / "ray.io_rayclusters.yaml"
IMAGE = os.environ.get("DJ_IMAGE", "datajuicer-ft:0.1.0")
OPERATOR_NAMESPACE, RELEASE = "dj-system", "datajuicer-operator"
ACCESS_KEY, SECRET_KEY = "dj-e2e-access", "dj-e2e-secret-not-real"
DOCKER = "/usr/bin/docker"

pytestmark = pytest.mark.e2e


def cluster_env() -> Optional[dict[str, str]]:
    """The variables `local-cluster.sh env` prints, if the cluster is running."""
    if not SCRIPT.exists() or subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode != 0:
        return None
    lines = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True, check=True).stdout
    return dict(line.removeprefix("export ").split("=", 1) for line in lines.splitlines() if line.startswith("export "))


class Kubectl:
    def __init__(self, env: dict[str, str], namespace: Optional[str] = None) -> None:
        self.env, self.namespace = env, namespace

    def __call__(self, *args: str, input: Optional[str] = None, check: bool = True,
                 timeout: float = 300) -> subprocess.CompletedProcess[str]:
        ns = ["-n", self.namespace] if self.namespace else []
        done = subprocess.run([self.env["DJ_LOCAL_KUBECTL"], f"--kubeconfig={self.env['KUBECONFIG']}", *ns, *args],
                              input=input, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)

    def get(self, kind: str, name: str) -> Optional[dict[str, Any]]:
        done = self("get", kind, name, "-o", "json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def status(self, name: str) -> dict[str, Any]:
        return (self.get("djjob", name) or {}).get("status") or {}

    def pods(self, selector: str = "") -> list[dict[str, Any]]:
        return self.json("get", "pods", *(["-l", selector] if selector else []))["items"]

    def describe(self, name: str) -> str:
        return (self("describe", "djjob", name, check=False).stdout[-3000:]
                + self("get", "pods", "-o", "wide", check=False).stdout)

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DOCKER, "-H", self.env["DOCKER_HOST"], *args], capture_output=True, text=True,
                              check=True, timeout=120)


@pytest.fixture(scope="session")
def cluster() -> Kubectl:
    env = cluster_env()
    if env is None:
        message = "no local cluster: run `scripts/local-cluster.sh up && scripts/local-images.sh all` (root)"
        if os.environ.get("DJ_REQUIRE_LOCAL_CLUSTER") or os.environ.get("CI"):
            pytest.fail(f"DJ_REQUIRE_LOCAL_CLUSTER is set but {message}")
        pytest.skip(message)
    kc = Kubectl(env)
    inspect = subprocess.run([DOCKER, "-H", env["DOCKER_HOST"], "image", "inspect", "-f", "{{.Id}}", IMAGE],
                             capture_output=True, text=True)
    if inspect.returncode != 0:
        pytest.fail(f"the image {IMAGE} is not built: run scripts/local-images.sh all")
    kc.image_id = inspect.stdout.strip()
    # jobs a crashed earlier session left (the cluster keeps its etcd between runs)
    stale = [n for n in kc("get", "namespaces", "-o", "name").stdout.split() if n.startswith("namespace/dj-e2e-")]
    if stale:
        kc("delete", *stale, "--wait=false")
    return kc


@pytest.fixture(scope="session")
def operator(cluster: Kubectl) -> Iterator[Kubectl]:
    """The chart, rendered with helm-python-sdk and applied with kubectl (what `helm install`
    does, without release bookkeeping), its operator Deployment rolled out from IMAGE."""
    cluster("apply", "--server-side", "--force-conflicts", "-f", str(RAYCLUSTER_CRD))  # too big for client-side apply
    cluster("apply", "-f", str(REPO / "charts" / "datajuicer-operator" / "crds"))  # as helm installs crds/
    for crd in ("datajuicerjobs.datajuicer.io", "rayclusters.ray.io"):
        wait_for(lambda: any(c["type"] == "Established" and c["status"] == "True"
                             for c in (cluster.get("crd", crd) or {}).get("status", {}).get("conditions") or []),
                 60, f"CRD {crd} Established", every=1)
    cluster("create", "namespace", OPERATOR_NAMESPACE, check=False)
    name, _, tag = IMAGE.rpartition(":")
    values = {"image": {"repository": name, "tag": tag, "pullPolicy": "Never"}, "operator": {"interval": 2}}
    manifests = render(values, name=RELEASE, namespace=OPERATOR_NAMESPACE)["manifests"]
    for m in manifests:
        m.setdefault("metadata", {}).setdefault("namespace", OPERATOR_NAMESPACE)
        if m["kind"] == "Deployment":  # a rebuilt image under the same tag rolls the operator out
            template = m["spec"]["template"].setdefault("metadata", {})
            template.setdefault("annotations", {})["datajuicer.io/image-id"] = cluster.image_id
    cluster("apply", "-f", "-", input=yaml.safe_dump_all(manifests))
    ops = Kubectl(cluster.env, OPERATOR_NAMESPACE)
    ops("rollout", "status", f"deployment/{RELEASE}", "--timeout=300s")
    yield ops


@pytest.fixture(scope="session")
def kuberay(cluster: Kubectl) -> Iterator[Any]:
    from kubernetes import config

    from tests.support.kuberay import KubeRayStandIn

    stand_in = KubeRayStandIn(config.new_client_from_config(cluster.env["KUBECONFIG"])).start()
    yield stand_in
    stand_in.stop()


@pytest.fixture(scope="session")
def s3_endpoint(cluster: Kubectl) -> Iterator[str]:
    """moto on the bridge address: the host's tests and the pods reach the same server."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=cluster.env["DJ_NODE_IP"], port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3(s3_endpoint: str):
    import s3fs

    return s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, client_kwargs={"endpoint_url": s3_endpoint})


@pytest.fixture
def kc(cluster: Kubectl, operator: Kubectl, kuberay: Any, s3: Any, tmp_path_factory) -> Iterator[Kubectl]:
    """A fresh namespace with the S3 credentials Secret and a bucket of its own."""
    namespace = f"dj-e2e-{uuid.uuid4().hex[:8]}"
    cluster("create", "namespace", namespace)
    kc = Kubectl(cluster.env, namespace)
    kc("create", "secret", "generic", "dj-s3-credentials", f"--from-literal=AWS_ACCESS_KEY_ID={ACCESS_KEY}",
       f"--from-literal=AWS_SECRET_ACCESS_KEY={SECRET_KEY}")
    kc.bucket = namespace
    s3.mkdir(namespace)
    kc.volumes = []
    yield kc
    kc("delete", "djjobs", "--all", "--timeout=3m", check=False)
    cluster("delete", "namespace", namespace, "--wait=false", check=False)
    for pv, path in kc.volumes:
        cluster("delete", "pv", pv, "--wait=false", check=False)
        shutil.rmtree(path, ignore_errors=True)


def state_volume(kc: Kubectl, claim: str, root: Path) -> Path:
    """A hostPath PersistentVolume bound in advance to the job's state claim; returns its
    directory on this machine (where the event log can be read)."""
    path = root / f"{kc.namespace}-{claim}"
    path.mkdir(parents=True)
    path.chmod(0o777)  # hostPath volumes ignore fsGroup; the pods run as uid 1000
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{kc.namespace}-{claim}"},
          "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                   "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(path)},
                   "claimRef": {"namespace": kc.namespace, "name": claim}}}
    kc("apply", "-f", "-", input=yaml.safe_dump(pv))
    kc.volumes.append((pv["metadata"]["name"], path))
    return path
