"""Operator test fixtures (a real dj-operator, the test node agent, the CRD), shared by every test folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.k8s import LocalCluster, free_port, stop_process, tail, wait_until_healthy
from tests.support.node_agent import PROGRESS_ANNOTATION, NodeAgent

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "datajuicer.io_datajuicerjobs.yaml"
INTERVAL = 0.5  # the operator's timer in tests: fast enough to see progress, cheap on 2 cores


@pytest.fixture(scope="session")
def dj_crd(kube_cluster: LocalCluster) -> str:
    kube_cluster.kubectl("apply", "-f", str(CRD))
    name = "datajuicerjobs.datajuicer.io"
    kube_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
    return name


@pytest.fixture(scope="session")
def node_agent(kube_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAgent]:
    agent = NodeAgent(kube_cluster.api_client(), tmp_path_factory.mktemp("node")).start()
    yield agent
    agent.stop()


class OperatorProcess:
    """`dj-operator` as a user runs it: a process with a kubeconfig, watching all namespaces."""

    def __init__(self, cluster: LocalCluster, log: Path, kubeconfig: Path | None = None) -> None:
        self.cluster, self.log = cluster, log
        self.kubeconfig = kubeconfig  # None: the cluster's admin kubeconfig
        self.port = free_port()
        self.metrics_port = free_port()  # /metrics and /readyz share it
        self.proc: subprocess.Popen | None = None

    @property
    def command(self) -> list[str]:
        return [str(Path(sys.executable).parent / "dj-operator"), "--all-namespaces",
                "--interval", str(INTERVAL), "--liveness", f"http://127.0.0.1:{self.port}/healthz",
                "--progress-endpoint-annotation", PROGRESS_ANNOTATION,
                "--force-delete-after-seconds", "5", "--metrics-port", str(self.metrics_port),
                "--readiness", f"http://127.0.0.1:{self.metrics_port}/readyz"]

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["KUBECONFIG"] = str(self.kubeconfig or self.cluster.kubeconfig)
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(self.command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        wait_until_healthy(self.proc, f"http://127.0.0.1:{self.port}/healthz", self.log)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crashed or evicted operator pod: no clean shutdown."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def tail(self, lines: int = 60) -> str:
        return tail(self.log, lines)

    def died(self) -> str | None:
        """Why the process is not running, with its log tail; None while it runs (or was
        stopped on purpose)."""
        if self.proc is None or self.proc.poll() is None:
            return None
        return f"dj-operator exited with code {self.proc.returncode}; its log ends:\n{self.tail(40)}"

    def ensure_running(self) -> None:
        """Fails at once, with the reason, if the operator died (a test then errors in setup
        instead of timing out on a dead operator), after restarting it for the tests after."""
        why = self.died()
        if why is not None:
            self.start()
            pytest.fail(f"the session's operator died during an earlier test (restarted for the next ones): {why}",
                        pytrace=False)


@pytest.fixture(scope="session")
def dj_operator(kube_cluster: LocalCluster, dj_crd: str, kuberay_crd: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = OperatorProcess(kube_cluster, tmp_path_factory.mktemp("operator") / "dj-operator.log")
    op.start()
    yield op
    op.stop()


@pytest.fixture
def job_namespace(kube_namespace: str, node_agent: NodeAgent, dj_operator: OperatorProcess) -> Iterator[str]:
    """A fresh namespace that the node agent serves and the operator watches."""
    dj_operator.ensure_running()
    node_agent.adopt(kube_namespace)
    yield kube_namespace
    node_agent.release(kube_namespace)


@pytest.fixture
def s3_secret(kube_cluster: LocalCluster, job_namespace: str, s3_env: dict[str, str]) -> str:
    """The S3 credentials as a Secret in the job's namespace, created with kubectl."""
    kube_cluster.kubectl("-n", job_namespace, "create", "secret", "generic", "s3-creds",
                         f"--from-literal=AWS_ACCESS_KEY_ID={s3_env['AWS_ACCESS_KEY_ID']}",
                         f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_env['AWS_SECRET_ACCESS_KEY']}")
    return "s3-creds"
