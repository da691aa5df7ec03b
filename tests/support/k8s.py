"""A real kube-apiserver v1.20.2 + etcd on loopback, and the fixtures that share it.

The operator's contract is with a real apiserver: RBAC, CRD schemas, server-side apply,
resourceVersions and watches. A fake would agree with whatever the code assumes, so the
shell tests run against the real binaries that scripts/build-kube-apiserver.sh builds.
There is no controller-manager, scheduler or kubelet: objects are stored and validated but
nothing reconciles them (pods never run, namespaces never finish deleting), which is what
an operator's own tests want: the test plays the rest of the cluster.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from tests.support.wait import wait_for

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-kube-apiserver.sh"
RAYCLUSTER_CRD = REPO / "tests" / "data" / "kuberay" / "ray.io_rayclusters.yaml"

# Static tokens: the cluster listens on loopback only and lives for one test session.
ADMIN_TOKEN = "dj-test-admin-token"
OPERATOR_SA_TOKEN = "dj-test-operator-sa-token"
# The identity the Helm chart's operator ServiceAccount gets in a real cluster, so RBAC
# tests can prove the chart's Role grants exactly what the operator needs.
OPERATOR_SA_USER = "system:serviceaccount:dj-system:datajuicer-operator"
OPERATOR_SA_GROUPS = (
    "system:serviceaccounts",
    "system:serviceaccounts:dj-system",
    "system:authenticated",
)

READY_TIMEOUT_S = 90.0


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message carries kubectl's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {self.stderr.strip()[:4000]}"


@dataclass(frozen=True)
class Binaries:
    apiserver: Path
    kubectl: Path
    etcd: Path


def build_binaries() -> Binaries:
    """Runs the build script (instant once cached) and returns what it built."""
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False
    )
    etcd = shutil.which("etcd")
    if done.returncode != 0 or etcd is None:
        raise RuntimeError(
            f"{BUILD_SCRIPT.name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    apiserver, kubectl = done.stdout.split()
    return Binaries(Path(apiserver), Path(kubectl), Path(etcd))


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS picks, so sessions don't collide)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(
    proc: subprocess.Popen, url: str, log: Path, ssl_context: ssl.SSLContext | None = None,
    token: str | None = None,
) -> None:
    """Polls url until it answers 200, failing fast with the log tail if proc dies first."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")

    def healthy() -> bool:
        with urllib.request.urlopen(request, timeout=5, context=ssl_context) as response:
            return response.status == 200

    wait_for(healthy, READY_TIMEOUT_S, f"{url} to answer 200", lambda: tail(log),
             ignore=(urllib.error.URLError, OSError), process=proc)


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop_process(proc: subprocess.Popen | None) -> None:
    """SIGTERM this one process (by its PID), then SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class LocalCluster:
    """etcd + kube-apiserver on free loopback ports, with token users and RBAC on.

    Static tokens are read only at start-up, so every identity a test needs is declared
    up front in extra_tokens as {token: (user, groups)}. The admin (ADMIN_TOKEN, group
    system:masters) is always there. stop_apiserver/start_apiserver keep etcd, the port
    and the certificates, so clients and kubeconfigs survive a restart.
    """

    def __init__(
        self,
        binaries: Binaries,
        base_dir: Path | None = None,
        extra_tokens: Mapping[str, tuple[str, Sequence[str]]] | None = None,
    ) -> None:
        self.binaries = binaries
        self.workdir = Path(tempfile.mkdtemp(prefix="dj-kube-", dir=base_dir))
        self.tokens = {ADMIN_TOKEN: ("admin", ("system:masters",)), **(extra_tokens or {})}
        self.etcd_port, self.etcd_peer_port, self.port = free_port(), free_port(), free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.ca_file = self.workdir / "certs" / "apiserver.crt"
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self._etcd: subprocess.Popen | None = None
        self._apiserver: subprocess.Popen | None = None

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self._write_auth_files()
            self._start_etcd()
            self.start_apiserver()
            self.kubeconfig = self.kubeconfig_for(ADMIN_TOKEN)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Ends both processes and removes the cluster's files, etcd's data included."""
        self.stop_apiserver()
        stop_process(self._etcd)
        self._etcd = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def start_apiserver(self) -> None:
        """Starts the apiserver on the cluster's fixed port and waits for /readyz."""
        log = self.workdir / "kube-apiserver.log"
        with log.open("a") as out:
            self._apiserver = subprocess.Popen(
                [str(self.binaries.apiserver), *self._apiserver_flags()],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        self._wait_for_api()

    def _wait_for_api(self) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False  # the probe only asks "up yet?"; clients verify
        context.verify_mode = ssl.CERT_NONE  # against ca_file, which start-up writes
        wait_until_healthy(
            self._apiserver, f"{self.server}/readyz", self.workdir / "kube-apiserver.log", context, token=ADMIN_TOKEN
        )

    def stop_apiserver(self) -> None:
        stop_process(self._apiserver)
        self._apiserver = None

    def restart_apiserver(self) -> None:
        """Takes the API down and up again over the same etcd, as a control-plane upgrade would."""
        self.stop_apiserver()
        self.start_apiserver()

    def restart_etcd(self, down_s: float = 1.0) -> None:
        """SIGKILLs etcd (a crash, not a clean stop), keeps it down a moment, and starts it
        again over the same data dir; returns once the apiserver is ready again."""
        if self._etcd is not None:
            self._etcd.kill()
            self._etcd.wait()
        time.sleep(down_s)
        self._start_etcd()
        self._wait_for_api()

    def kubeconfig_for(self, token: str) -> Path:
        """A kubeconfig that authenticates with token; it must be one the cluster started with."""
        if token not in self.tokens:
            raise ValueError("unknown token: declare it in extra_tokens before start()")
        user = self.tokens[token][0]
        path = self.workdir / f"{re.sub(r'[^A-Za-z0-9.-]+', '-', user)}.kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "dj-test", "cluster": {
                "server": self.server, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "dj-test", "context": {"cluster": "dj-test", "user": user}}],
            "current-context": "dj-test",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Runs the matching v1.20.2 kubectl against this cluster, as admin by default."""
        cmd = [
            str(self.binaries.kubectl),
            f"--kubeconfig={kubeconfig or self.kubeconfig}",
            f"--cache-dir={self.workdir / 'kubectl-cache'}",
            *args,
        ]
        done = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise KubectlError(done.returncode, cmd, done.stdout, done.stderr)
        return done

    def api_client(self, token: str = ADMIN_TOKEN) -> ApiClient:
        """An official-client ApiClient for token's user (admin by default)."""
        from kubernetes import config  # the operator extra: worker-only runs load this plugin too

        return config.new_client_from_config(config_file=str(self.kubeconfig_for(token)))

    def _write_auth_files(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.workdir / "sa.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ))
        (self.workdir / "sa.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ))
        rows = [
            f'{token},{user},{user},"{",".join(groups)}"'
            for token, (user, groups) in self.tokens.items()
        ]
        (self.workdir / "tokens.csv").write_text("\n".join(rows) + "\n")

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        log = self.workdir / "etcd.log"
        with log.open("a") as out:
            self._etcd = subprocess.Popen(
                [
                    str(self.binaries.etcd),
                    "--name=dj-test",
                    f"--data-dir={self.workdir / 'etcd'}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=dj-test={peer}",
                ],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        wait_until_healthy(self._etcd, f"{client}/health", log)

    def _apiserver_flags(self) -> list[str]:
        work = self.workdir
        return [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            "--insecure-port=0",  # 1.20 still opens an unauthenticated :8080 unless told not to
            f"--cert-dir={work / 'certs'}",  # self-signed serving cert, kept across restarts
            "--authorization-mode=RBAC",
            f"--token-auth-file={work / 'tokens.csv'}",
            # No controller-manager mints ServiceAccount tokens, so pods must not need one.
            "--disable-admission-plugins=ServiceAccount",
            # No kubelets or nodes: don't publish this process as the kubernetes Service.
            "--endpoint-reconciler-type=none",
            f"--service-account-key-file={work / 'sa.pub'}",
            f"--service-account-signing-key-file={work / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16",  # only allocated, never routed
            "--profiling=false",
        ]


def should_fail_without_k8s() -> bool:
    """CI and DJ_REQUIRE_K8S make a missing apiserver a failure instead of a skip."""
    return bool(os.environ.get("CI") or os.environ.get("DJ_REQUIRE_K8S"))


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One real cluster per test session, with the operator ServiceAccount's token declared."""
    try:
        binaries = build_binaries()
    except RuntimeError as err:
        message = f"no kube-apiserver v1.20.2 (run scripts/build-kube-apiserver.sh as root): {err}"
        if should_fail_without_k8s():
            pytest.fail(message)
        pytest.skip(message)
    extra_tokens = {OPERATOR_SA_TOKEN: (OPERATOR_SA_USER, OPERATOR_SA_GROUPS)}
    with LocalCluster(binaries, tmp_path_factory.mktemp("kube"), extra_tokens) as cluster:
        yield cluster


@pytest.fixture
def kube_namespace(kube_cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test. Deletion is only requested: with no
    namespace controller it stays Terminating, which no later test can collide with."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:50].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def kuberay_crd(kube_cluster: LocalCluster) -> str:
    """KubeRay's RayCluster CRD (CEL rules stripped), installed and Established; its name."""
    kube_cluster.kubectl("apply", "--server-side", "-f", str(RAYCLUSTER_CRD))
    name = "rayclusters.ray.io"
    # Polled as JSON: v1.20's `kubectl wait` and jsonpath filters both fail on a CRD that
    # has no status.conditions yet.
    def is_established() -> bool:
        crd = json.loads(kube_cluster.kubectl("get", "crd", name, "-o", "json").stdout)
        conditions = crd["status"].get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_for(is_established, 60, f"CRD {name} to be Established")
    return name
