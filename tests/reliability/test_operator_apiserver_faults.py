"""The operator when the API goes away, and when the operator itself is restarted mid-phase:
real kube-apiserver + etcd, the real dj-operator, the test node agent as kubelet, dj-process
drivers on moto S3 (as test_operator_path.py).

- the CRD's `404 page not found` window right after an apiserver restart: the operator
  keeps running, its watches come back, and the job completes once;
- the apiserver away for 60 s while jobs run, one finishes and one is Stopping: no duplicate
  driver, and every status the operator missed is caught up within a poll interval or two;
- the operator SIGKILLed and restarted in each phase (Provisioning, Running, Stopping,
  Retrying): the job ends as it would have, with one driver per attempt and the output of an
  uninterrupted run.
"""
from __future__ import annotations

import threading
import time
import urllib.request
from typing import Any, Optional

import pytest

import tests.operator.helpers as h
from tests.reliability.test_operator_path import (  # noqa: F401 - fixtures: op, reference_rows
    PARTITION, ROWS, diagnose, finished, op, reference_rows, with_secret)
from tests.support.api_proxy import APIProxy
from tests.support.k8s import ADMIN_TOKEN
from tests.support.operator import INTERVAL, OperatorProcess
from tests.support.wait import wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.s3]


class Drivers:
    """Every 0.1 s, per job: its driver pods in the API (skipped while the apiserver is down)
    and its live driver processes on the node; keeps the maxima."""

    def __init__(self, op: dict[str, Any], jobs: list[str]) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(op["kube_cluster"].api_client())
        self.namespace, self.agent, self.jobs = op["job_namespace"], op["node_agent"], jobs
        self.max_pods = {j: 0 for j in jobs}
        self.max_procs = {j: 0 for j in jobs}
        self.api_samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "Drivers":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _of(self, job: str, names: list[str]) -> int:
        return sum(1 for n in names if n.startswith(f"{job}-driver-"))

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            procs = [r.name for r in list(self.agent.running.values())
                     if r.namespace == self.namespace and r.proc.poll() is None]
            for job in self.jobs:
                self.max_procs[job] = max(self.max_procs[job], self._of(job, procs))
            try:
                pods = [p.metadata.name for p in self.core.list_namespaced_pod(self.namespace, _request_timeout=2).items]
            except Exception:  # the apiserver is away
                continue
            self.api_samples += 1
            for job in self.jobs:
                self.max_pods[job] = max(self.max_pods[job], self._of(job, pods))


def scrape(operator: OperatorProcess, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name)


def ready(operator: OperatorProcess) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start_job(op: dict[str, Any], name: str, slow: float, **spec: Any) -> None:
    op["kc"].apply(h.job_manifest(name, op["s3_bucket"], op["s3_env"]["AWS_ENDPOINT_URL"],
                                  rows_per_partition=PARTITION, slow=slow, **spec))


def phase_is(op: dict[str, Any], name: str, *phases: str) -> Optional[dict[str, Any]]:
    st = op["kc"].status(name)
    return st if st.get("phase") in phases else None


def at_work(status: Optional[dict[str, Any]]) -> bool:
    """The driver reports a partition running or done (so its stop handling is in place)."""
    partitions = (status or {}).get("partitions") or {}
    return bool(partitions.get("running") or partitions.get("completed"))


def output(op: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return h.read_jsonl(op["s3_env"], f"s3://{op['s3_bucket']}/out/{name}.jsonl")


# ---- the CRD not served for a moment after an apiserver restart -------------------------
@pytest.fixture
def proxied_operator(op: dict[str, Any], tmp_path) -> Any:
    """The session's operator is swapped for one that reaches the apiserver through APIProxy
    (one operator at a time: both watch every namespace); swapped back afterwards."""
    cluster, session_operator = op["kube_cluster"], op["dj_operator"]
    proxy = APIProxy(cluster).start()
    session_operator.stop()
    operator = OperatorProcess(cluster, tmp_path / "dj-operator.log",
                               kubeconfig=proxy.kubeconfig(ADMIN_TOKEN, tmp_path / "proxied.kubeconfig"))
    try:
        operator.start()
        yield operator, proxy
    finally:
        operator.stop()
        proxy.stop()
        session_operator.start()


def test_the_crd_404_window_after_an_apiserver_restart_leaves_the_operator_running_and_watching(
        op, proxied_operator, reference_rows):
    operator, proxy = proxied_operator
    kc, agent, ns = op["kc"], op["node_agent"], op["job_namespace"]
    op["dj_operator"] = operator  # diagnose() shows this operator's log
    why = lambda: diagnose(op, "survivor")  # noqa: E731
    with_secret(op)
    h.upload_dataset(op["s3_env"], op["s3_bucket"], ROWS)
    start_job(op, "survivor", slow=1.5)
    with Drivers(op, ["survivor"]) as drivers:
        wait_for(lambda: (s := phase_is(op, "survivor", "Running")) and (s.get("partitions") or {}).get("completed"),
                   90, "the driver mid-run", why)
        restarts_before = scrape(operator, "datajuicer_operator_kopf_restarts_total")
        # The apiserver restarts, and its CRD handlers come back only after its port does:
        # the operator's watch reconnects into `404 page not found` for the DataJuicerJob API.
        proxy.not_served("/apis/datajuicer.io/")
        op["kube_cluster"].restart_apiserver()
        wait_for(lambda: any(p.endswith("/datajuicerjobs") for p in proxy.refused_404), 30,
                   "the operator's watch to hit the 404", why)
        wait_for(lambda: scrape(operator, "datajuicer_operator_kopf_restarts_total") > restarts_before, 30,
                   "kopf to have stopped on the 404 and been restarted", why)
        assert operator.died() is None, operator.died()
        assert not ready(operator), "not ready while the DataJuicerJob API is not served"
        proxy.not_served(None)  # the CRD is served again
        wait_for(lambda: ready(operator), 30, "the operator to be ready again", why)
        # The watch is back: a job created now is picked up (its first reconcile records its children).
        start_job(op, "after", slow=0.0, stop=True)
        wait_for(lambda: (kc.status("after").get("children") or {}).get("driverPod"), 20,
                   "a job created after the window to be reconciled", lambda: diagnose(op, "after"))
        done = finished(op, "survivor")
    assert operator.died() is None, operator.died()
    assert done["phase"] == "Succeeded" and done["attempt"] == 1 and not done.get("failures"), why()
    assert drivers.max_pods["survivor"] == 1 and drivers.max_procs["survivor"] == 1, why()
    assert [p for n, p in agent.started_pods if n == ns] == ["survivor-driver-1"]
    assert output(op, "survivor") == reference_rows


# ---- the apiserver away for 60 s ---------------------------------------------------------
OUTAGE_S = 60.0
CATCH_UP_S = INTERVAL + 4.0  # one poll interval, plus the node agent's report and a loaded machine's slack


def test_the_apiserver_away_for_60s_while_jobs_run_finish_and_stop_is_caught_up_without_a_duplicate_driver(
        op, reference_rows):
    """About 2.5 minutes: the outage itself is 60 s. One job runs through it, one finishes
    during it, one is Stopping when it begins."""
    kc, agent, ns, cluster = op["kc"], op["node_agent"], op["job_namespace"], op["kube_cluster"]
    jobs = ["through", "finishes", "stopping"]
    why = lambda: "\n\n".join(diagnose(op, j) for j in jobs)  # noqa: E731
    with_secret(op)
    h.upload_dataset(op["s3_env"], op["s3_bucket"], ROWS)
    # ~120 s of work: it must outlive the outage (60 s), the apiserver's start (its /readyz)
    # and the catch-up, with a margin for a loaded machine; at 80 s it ended during the catch-up.
    start_job(op, "through", slow=24.0)
    start_job(op, "finishes", slow=8.0)   # ~40 s of work: ends while the API is away
    start_job(op, "stopping", slow=16.0)
    with Drivers(op, jobs) as drivers:
        wait_for(lambda: all(phase_is(op, j, "Running") for j in jobs), 90, "all three running", why)
        # The stop must find its driver at work, a partition under way: a SIGTERM that comes
        # before the driver has set its handlers ends it at once with nothing checkpointed
        # (rightly `resumable: false`), which is not the stop this test is about.
        wait_for(lambda: at_work(phase_is(op, "stopping", "Running")), 60, "the stopping job's driver at work", why)
        kc.patch_stop("stopping", True)
        wait_for(lambda: phase_is(op, "stopping", "Stopping"), 30, "the stop to begin", why)
        assert agent.process(ns, "finishes-driver-1").proc.poll() is None, "must still run when the API goes"
        # The API is away from the SIGTERM on: the apiserver closes its port at once, then drains
        # (stop_apiserver waits up to 15 s for that), so the outage is timed from here.
        went = time.monotonic()
        cluster.stop_apiserver()
        finishes = agent.process(ns, "finishes-driver-1")
        wait_for(lambda: finishes.proc.poll() is not None, OUTAGE_S, "the short job's driver to exit", why)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - went)))  # the outage is the fault: its length is the point
        through = agent.process(ns, "through-driver-1")
        assert through is not None and through.proc.poll() is None, "the long job's driver runs on"
        cluster.start_apiserver()
        back = time.monotonic()
        assert op["dj_operator"].died() is None, op["dj_operator"].died()

        def caught_up() -> Optional[dict[str, float]]:
            if not (phase_is(op, "finishes", "Succeeded") and phase_is(op, "stopping", "Stopped")):
                return None
            return {"lag_s": time.monotonic() - back}

        lag = wait_for(caught_up, CATCH_UP_S + 30, "the missed transitions to be caught up", why)["lag_s"]
        # The long job's status reflects what its driver did while the API was away.
        progress_url = kc.get("pod", "through-driver-1")["metadata"]["annotations"]["datajuicer.io/progress-endpoint"]
        with urllib.request.urlopen(progress_url + "/progress", timeout=5) as response:
            import json
            done_then = json.loads(response.read())["partitions"]["completed"]
        wait_for(lambda: (kc.status("through").get("partitions") or {}).get("completed", 0) >= done_then,
                   CATCH_UP_S, "the running job's progress to be caught up", why)
        done = finished(op, "through", 240)
    assert lag <= CATCH_UP_S, f"caught up {lag:.1f}s after the apiserver returned"
    assert done["phase"] == "Succeeded" and done["attempt"] == 1, why()
    assert kc.status("finishes")["attempt"] == 1 and kc.status("stopping")["checkpoint"]["resumable"] is True, why()
    assert drivers.api_samples > 20, "the pods were sampled"
    assert all(drivers.max_pods[j] == 1 and drivers.max_procs[j] == 1 for j in jobs), (drivers.max_pods, why())
    assert sorted(p for n, p in agent.started_pods if n == ns) == sorted(f"{j}-driver-1" for j in jobs)
    assert output(op, "through") == reference_rows and output(op, "finishes") == reference_rows


# ---- the operator restarted in the middle of each phase --------------------------------------
def restart_operator(op: dict[str, Any], meanwhile: Any = None) -> None:
    """SIGKILL (a crashed or evicted pod), do `meanwhile` while no operator runs, then start it."""
    op["dj_operator"].kill()
    if meanwhile is not None:
        meanwhile()
    op["dj_operator"].start()


def test_an_operator_restarted_while_provisioning_adopts_the_driver_that_started_meanwhile(op, reference_rows):
    kc, agent, ns = op["kc"], op["node_agent"], op["job_namespace"]
    why = lambda: diagnose(op, "prov")  # noqa: E731
    with_secret(op)
    h.upload_dataset(op["s3_env"], op["s3_bucket"], ROWS)
    agent.release(ns)  # no kubelet yet: the driver pod stays Pending, the job Provisioning
    start_job(op, "prov", slow=0.3)
    with Drivers(op, ["prov"]) as drivers:
        wait_for(lambda: phase_is(op, "prov", "Provisioning") and kc.get("pod", "prov-driver-1"), 60,
                   "the driver pod created, the job Provisioning", why)
        restart_operator(op, meanwhile=lambda: (agent.adopt(ns), wait_for(
            lambda: agent.process(ns, "prov-driver-1"), 30, "the driver to start while no operator runs", why)))
        done = finished(op, "prov", 120)
    assert done["phase"] == "Succeeded" and done["attempt"] == 1 and not done.get("failures"), why()
    assert drivers.max_pods["prov"] == 1 and [p for n, p in agent.started_pods if n == ns] == ["prov-driver-1"]
    assert output(op, "prov") == reference_rows


def test_an_operator_restarted_while_running_catches_up_a_driver_that_finished_meanwhile(op, reference_rows):
    kc, agent, ns = op["kc"], op["node_agent"], op["job_namespace"]
    why = lambda: diagnose(op, "run")  # noqa: E731
    with_secret(op)
    h.upload_dataset(op["s3_env"], op["s3_bucket"], ROWS)
    start_job(op, "run", slow=0.5)
    with Drivers(op, ["run"]) as drivers:
        wait_for(lambda: phase_is(op, "run", "Running"), 60, "the job running", why)
        driver = agent.process(ns, "run-driver-1")
        restart_operator(op, meanwhile=lambda: wait_for(lambda: agent.exits.get((ns, "run-driver-1")) is not None,
                                                          60, "the driver to finish while no operator runs", why))
        assert driver.proc.returncode == 0
        done = wait_for(lambda: phase_is(op, "run", "Succeeded"), CATCH_UP_S + 10, "Succeeded, caught up", why)
    assert done["attempt"] == 1 and done["samples"]["processed"] == ROWS, why()
    assert done["partitions"]["completed"] == ROWS // PARTITION, "the final counts, from the termination message"
    assert drivers.max_pods["run"] == 1 and [p for n, p in agent.started_pods if n == ns] == ["run-driver-1"]
    assert output(op, "run") == reference_rows


def test_an_operator_restarted_while_stopping_completes_the_stop_and_the_resume_is_exactly_once(op, reference_rows):
    kc, agent, ns = op["kc"], op["node_agent"], op["job_namespace"]
    why = lambda: diagnose(op, "stop")  # noqa: E731
    with_secret(op)
    h.upload_dataset(op["s3_env"], op["s3_bucket"], ROWS)
    start_job(op, "stop", slow=1.5)
    with Drivers(op, ["stop"]) as drivers:
        wait_for(lambda: (s := phase_is(op, "stop", "Running")) and (s.get("partitions") or {}).get("completed"),
                   90, "the driver mid-run", why)
        kc.patch_stop("stop", True)
        wait_for(lambda: phase_is(op, "stop", "Stopping"), 30, "Stopping", why)
        restart_operator(op)
        stopped = wait_for(lambda: phase_is(op, "stop", "Stopped"), 60, "Stopped", why)
        assert stopped["checkpoint"]["resumable"] is True and stopped["attempt"] == 1, why()
        kc.patch_stop("stop", False)
        done = finished(op, "stop", 120)
    assert done["phase"] == "Succeeded" and done["attempt"] == 2, why()
    assert drivers.max_pods["stop"] == 1 and drivers.max_procs["stop"] == 1, why()
    assert [p for n, p in agent.started_pods if n == ns] == ["stop-driver-1", "stop-driver-2"]
    assert output(op, "stop") == reference_rows


def test_an_operator_restarted_while_retrying_starts_exactly_one_next_attempt(op, reference_rows):
    kc, agent, ns = op["kc"], op["node_agent"], op["job_namespace"]
    why = lambda: diagnose(op, "retry")  # noqa: E731
    with_secret(op)
    h.upload_dataset(op["s3_env"], op["s3_bucket"], ROWS)
    start_job(op, "retry", slow=1.0, backoff={"initialSeconds": 6})
    with Drivers(op, ["retry"]) as drivers:
        wait_for(lambda: (s := phase_is(op, "retry", "Running")) and (s.get("partitions") or {}).get("completed"),
                   90, "the driver mid-run", why)
        agent.kill(ns, "retry-driver-1")
        wait_for(lambda: phase_is(op, "retry", "Retrying"), 30, "Retrying", why)
        restart_operator(op)
        done = finished(op, "retry", 120)
    assert done["phase"] == "Succeeded" and done["attempt"] == 2 and done["failures"] == 1, why()
    assert drivers.max_pods["retry"] == 1 and drivers.max_procs["retry"] == 1, why()
    assert [p for n, p in agent.started_pods if n == ns] == ["retry-driver-1", "retry-driver-2"]
    assert output(op, "retry") == reference_rows
