"""The operator path under faults and misuse: real kube-apiserver + etcd, the real dj-operator,
the test node agent as kubelet, dj-process drivers on moto S3.

- chaos: the driver pod's process SIGKILLed, the operator SIGKILLed and restarted, the apiserver
  restarted; the job completes once, with an uninterrupted run's output, and no two driver pods
  (nor two driver processes) ever exist at the same time;
- bad CRs: rejected by the apiserver's schema with the field named, or a status message;
- security: non-root pods without privilege escalation; the S3 secret in no status, Event,
  child object, log or engine file.

The operator, node agent and namespace are the session's shared fixtures (tests/support/operator.py),
so one session never runs two operators."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import orjson
import pytest
import yaml

import tests.operator.helpers as h  # the operator tests' kubectl and S3 helpers
from djworker.demo_data import write_jsonl
from tests.support.s3 import SECRET_KEY
from tests.support.wait import wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.s3]

ROWS, PARTITION, SLOW = 200, 40, 0.8  # five partitions, most of a second each: slow enough to kill mid-run


@pytest.fixture
def op(kube_cluster, dj_operator, node_agent, job_namespace, s3_env, s3_bucket) -> dict[str, Any]:
    """The session's operator, node agent and a fresh namespace they serve, with S3 at hand."""
    return {"kube_cluster": kube_cluster, "dj_operator": dj_operator, "node_agent": node_agent,
            "job_namespace": job_namespace, "s3_env": s3_env, "s3_bucket": s3_bucket,
            "kc": h.Kubectl(kube_cluster, job_namespace)}


def with_secret(op: dict[str, Any], name: str = "s3-creds") -> None:
    env = op["s3_env"]
    op["kc"]("create", "secret", "generic", name, f"--from-literal=AWS_ACCESS_KEY_ID={env['AWS_ACCESS_KEY_ID']}",
             f"--from-literal=AWS_SECRET_ACCESS_KEY={env['AWS_SECRET_ACCESS_KEY']}")


def diagnose(op: dict[str, Any], name: str) -> str:
    kc, agent = op["kc"], op["node_agent"]
    logs = [f"--- {pod} (exit {agent.exits.get((ns, pod))}):\n{path.read_text()[-2000:]}"
            for (ns, pod), path in list(agent.logs.items()) if ns == kc.namespace]
    events = [f"{e['type']} {e['reason']}: {e['message']}" for e in kc.events(name)]
    return (f"status: {kc.status(name)}\npods: {[p['metadata']['name'] for p in kc.pods()]}\nevents:\n  "
            + "\n  ".join(events) + "\n" + "\n".join(logs) + f"\n--- operator:\n{op['dj_operator'].tail(20)}")


def finished(op: dict[str, Any], name: str, timeout: float = 180) -> dict[str, Any]:
    return wait_for(lambda: (s := op["kc"].status(name)).get("phase") in ("Succeeded", "Failed") and s,
                            timeout, f"{name} to finish", lambda: diagnose(op, name))


# ---- chaos on the operator path ---------------------------------------------------------
class DriverWatch:
    """Counts, every 0.1 s, the job's driver pods in the API and its live driver processes
    on the node; keeps the maxima. The API count is skipped while the apiserver is down."""

    def __init__(self, op: dict[str, Any]) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(op["kube_cluster"].api_client())
        self.namespace, self.agent = op["job_namespace"], op["node_agent"]
        self.max_pods, self.max_procs, self.samples = 0, 0, 0
        self.seen: list[list[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "DriverWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            procs = [r for r in list(self.agent.running.values())
                     if r.namespace == self.namespace and r.proc.poll() is None]
            self.max_procs = max(self.max_procs, len(procs))
            try:
                pods = self.core.list_namespaced_pod(self.namespace, _request_timeout=2).items
            except Exception:  # the apiserver is restarting
                continue
            names = sorted(p.metadata.name for p in pods)
            if len(names) > 1:
                self.seen.append(names)
            self.max_pods, self.samples = max(self.max_pods, len(names)), self.samples + 1


@pytest.fixture(scope="module")
def reference_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """One uninterrupted local dj-process run of the same recipe over the same rows."""
    tmp = tmp_path_factory.mktemp("op-reference")
    write_jsonl(str(tmp / "data.jsonl"), ROWS)
    recipe = h.job_manifest("ref", "unused", "unused", rows_per_partition=PARTITION, slow=0.0)["spec"]["recipe"]
    recipe.update(dataset_path=str(tmp / "data.jsonl"), export_path=str(tmp / "out.jsonl"), work_dir=str(tmp / "w"),
                  event_log_dir=str(tmp / "events"), checkpoint_dir=str(tmp / "ckpt"))
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    done = subprocess.run([sys.executable, "-m", "djworker.cli.process", "--config", str(tmp / "recipe.yaml"),
                           "--job_id", "ref", "--quiet"], capture_output=True, text=True, timeout=120, cwd=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    return [orjson.loads(line) for line in (tmp / "out.jsonl").read_bytes().splitlines() if line]


def engine_events(op: dict[str, Any], name: str) -> list[dict[str, Any]]:
    st = op["kc"].status(name)
    return h.state_volume_job(op["node_agent"].volume_dir(op["job_namespace"], st["children"]["eventLogClaim"]),
                              st["jobId"]).events()


def test_driver_kill_operator_restart_apiserver_and_etcd_restarts_complete_the_job_exactly_once(op, reference_rows):
    kc, agent, ns = op["kc"], op["node_agent"], op["job_namespace"]
    with_secret(op)
    h.upload_dataset(op["s3_env"], op["s3_bucket"], ROWS)
    kc.apply(h.job_manifest("chaotic", op["s3_bucket"], op["s3_env"]["AWS_ENDPOINT_URL"],
                            rows_per_partition=PARTITION, slow=SLOW))
    why = lambda: diagnose(op, "chaotic")  # noqa: E731
    with DriverWatch(op) as watch:
        wait_for(lambda: (s := kc.status("chaotic")).get("phase") == "Running"
                 and (s.get("partitions") or {}).get("completed", 0) >= 1, 90, "driver 1 mid-run", why)
        agent.kill(ns, "chaotic-driver-1")  # SIGKILL, as an OOM kill or a lost node
        wait_for(lambda: (s := kc.status("chaotic")).get("attempt") == 2 and s.get("phase") == "Running",
                 90, "driver 2 running", why)
        op["dj_operator"].kill()  # the operator crashes mid-run...
        op["dj_operator"].start()  # ...and its Deployment restarts it
        op["kube_cluster"].restart_apiserver()  # then the control plane goes away briefly
        op["kube_cluster"].restart_etcd()  # and etcd crashes under it
        done = finished(op, "chaotic")
    assert done["phase"] == "Succeeded" and done["attempt"] == 2 and done["failures"] == 1, why()
    assert watch.samples > 20 and watch.max_pods == 1 and watch.max_procs == 1, (watch.seen[:5], why())
    assert [p for n, p in agent.started_pods if n == ns] == ["chaotic-driver-1", "chaotic-driver-2"]
    rows = h.read_jsonl(op["s3_env"], f"s3://{op['s3_bucket']}/out/chaotic.jsonl")
    assert rows == reference_rows  # 0 lost, 0 duplicated, same bytes, same order
    evs = engine_events(op, "chaotic")
    types = [e["event_type"] for e in evs]
    assert types.count("JOB_COMPLETE") == 1 and types[-1] == "JOB_COMPLETE"
    completes = [e["partition_id"] for e in evs if e["event_type"] == "PARTITION_COMPLETE"]
    assert sorted(completes) == list(range(ROWS // PARTITION)), "every partition accepted exactly once"


# ---- security ----------------------------------------------------------------------------
def test_pods_run_as_non_root_without_privilege_escalation_and_the_secret_leaks_nowhere(op):
    kc, agent, ns = op["kc"], op["node_agent"], op["job_namespace"]
    with_secret(op)
    h.upload_dataset(op["s3_env"], op["s3_bucket"], 80)
    kc.apply(h.job_manifest("tidy", op["s3_bucket"], op["s3_env"]["AWS_ENDPOINT_URL"], rows_per_partition=40))
    driver = wait_for(lambda: next((p for p in kc.pods() if p["metadata"]["name"] == "tidy-driver-1"), None), 60,
                      "the driver pod", lambda: diagnose(op, "tidy"))
    done = finished(op, "tidy", 120)
    assert done["phase"] == "Succeeded", diagnose(op, "tidy")
    pod_security, container = driver["spec"]["securityContext"], driver["spec"]["containers"][0]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    creds = [e for e in container.get("env", []) if e["name"].startswith("AWS_SECRET")]
    assert creds and all("value" not in e and e["valueFrom"]["secretKeyRef"]["name"] == "s3-creds" for e in creds)

    texts = {
        "cr": kc("get", "djjob", "-o", "yaml").stdout,
        "describe": kc("describe", "djjob", "tidy").stdout,
        "events": kc("get", "events", "-o", "yaml").stdout,
        "children": kc("get", "pods,configmaps,persistentvolumeclaims", "-o", "yaml").stdout,
        "operator log": Path(op["dj_operator"].log).read_text(errors="replace"),
        **{f"log {pod}": path.read_text(errors="replace") for (n, pod), path in agent.logs.items() if n == ns},
        **{str(p): p.read_bytes().decode("utf-8", "replace") for p in (agent.root / ns).rglob("*") if p.is_file()},
    }
    assert [name for name, text in texts.items() if SECRET_KEY in text] == []


def test_ray_children_run_as_non_root_without_privilege_escalation(op):
    kc = op["kc"]
    with_secret(op)
    kc.apply(h.job_manifest("rayjob", op["s3_bucket"], op["s3_env"]["AWS_ENDPOINT_URL"], executorType="ray"))
    cluster = wait_for(lambda: (kc.get("rayclusters") or [None])[0], 60, "the RayCluster",
                       lambda: diagnose(op, "rayjob"))
    spec = cluster["spec"]
    templates = [spec["headGroupSpec"]["template"], *(g["template"] for g in spec.get("workerGroupSpecs", []))]
    for template in templates:
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        for c in template["spec"]["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
    assert SECRET_KEY not in json.dumps(cluster)
    kc("delete", "djjob", "rayjob", "--wait=false")


# ---- bad custom resources ------------------------------------------------------------------
SCHEMA_CASES = {
    # id: (change to a valid spec, words the apiserver's rejection must contain)
    "wrong_type": ({"backoffLimit": "three"}, ["spec.backoffLimit", "must be of type integer"]),
    "bad_enum": ({"checkpoint": {"strategy": "sometimes"}}, ["spec.checkpoint.strategy", "Unsupported value",
                                                             '"every_n_ops"']),
    "config_map_without_name": ({"recipe": None, "recipeConfigMap": {"key": "recipe.yaml"}},
                                ["spec.recipeConfigMap.name", "Required value"]),
    "negative_retries": ({"backoffLimit": -1}, ["spec.backoffLimit", "greater than or equal to 0"]),
}


@pytest.mark.parametrize("case", list(SCHEMA_CASES))
def test_a_cr_with_an_invalid_field_is_rejected_at_apply_naming_the_field(op, case):
    kc = op["kc"]
    change, words = SCHEMA_CASES[case]
    manifest = h.job_manifest("bad", "b", "http://x")
    manifest["spec"].update(change)
    manifest["spec"] = {k: v for k, v in manifest["spec"].items() if v is not None}
    # --validate=false: the apiserver's own schema check answers, not kubectl's copy of it
    done = kc("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert done.returncode != 0 and all(w in done.stderr for w in words), done.stderr
    assert kc.get("djjob", "bad") is None


def test_an_over_long_name_is_refused_by_the_apiserver_and_a_long_one_gets_short_children(op):
    kc = op["kc"]
    too_long = "j" * 254
    done = kc("apply", "-f", "-", input=yaml.safe_dump(h.job_manifest(too_long, "b", "http://x")), check=False)
    assert done.returncode != 0 and "must be no more than 253 characters" in done.stderr, done.stderr
    long_name = "a-very-long-data-juicer-job-name-" + "x" * 40  # 73: over every child-name limit
    kc.apply(h.job_manifest(long_name, op["s3_bucket"], op["s3_env"]["AWS_ENDPOINT_URL"], stop=True))
    st = wait_for(lambda: (s := kc.status(long_name)).get("children") and s, 30, "children names",
                  lambda: diagnose(op, long_name))
    assert all(len(child) <= 63 for child in st["children"].values()), st["children"]


def test_an_absent_secret_is_named_in_status_and_a_warning_event(op):
    """kubelet reports CreateContainerConfigError until the Secret exists; the job must say so."""
    kc = op["kc"]
    op["node_agent"].release(op["job_namespace"])  # kubelet is played below
    h.upload_dataset(op["s3_env"], op["s3_bucket"], 40)
    kc.apply(h.job_manifest("nosecret", op["s3_bucket"], op["s3_env"]["AWS_ENDPOINT_URL"], secret="missing-creds"))
    pod = wait_for(lambda: next(iter(kc.pods()), None), 60, "the driver pod", lambda: diagnose(op, "nosecret"))
    kubelet_reports(op, pod["metadata"]["name"], waiting=("CreateContainerConfigError",
                                                         'secret "missing-creds" not found'))
    st = wait_for(lambda: "missing-creds" in (kc.status("nosecret").get("message") or "") and kc.status("nosecret"),
                  8, "a status message naming the Secret", lambda: diagnose(op, "nosecret"))
    assert st["phase"] in ("Provisioning", "Failed")
    assert any(e["type"] == "Warning" and "missing-creds" in e["message"] for e in kc.events("nosecret"))


@pytest.mark.parametrize("problem", [
    ("waiting", ("ImagePullBackOff", 'Back-off pulling image "registry.invalid/dj:nope"'), "registry.invalid/dj:nope"),
    ("unschedulable", "0/1 nodes are available: 1 Insufficient cpu.", "Insufficient cpu"),
], ids=["invalid_image", "unschedulable"])
def test_a_driver_that_cannot_start_gets_a_status_message_saying_why(op, problem):
    """kubelet/scheduler are played by patching the pod status, in a namespace no node agent serves."""
    kc = op["kc"]
    op["node_agent"].release(op["job_namespace"])  # nothing runs the pod: it stays Pending, as on a real node
    kind, detail, words = problem
    kc.apply(h.job_manifest("stuck", op["s3_bucket"], op["s3_env"]["AWS_ENDPOINT_URL"], image="registry.invalid/dj:nope",
                            driver={"resources": {"requests": {"cpu": "64"}}}))
    pod = wait_for(lambda: next(iter(kc.pods()), None), 60, "the driver pod", lambda: diagnose(op, "stuck"))
    kubelet_reports(op, pod["metadata"]["name"], **{kind: detail})
    wait_for(lambda: words in (kc.status("stuck").get("message") or ""), 8, f"a status message with {words!r}",
             lambda: diagnose(op, "stuck"))


def kubelet_reports(op: dict[str, Any], pod: str, waiting: Optional[tuple[str, str]] = None,
                    unschedulable: Optional[str] = None) -> None:
    """Patch a Pending pod's status the way kubelet (waiting container) or the scheduler does."""
    status: dict[str, Any] = {"phase": "Pending"}
    if waiting:
        status["containerStatuses"] = [{"name": "driver", "image": "", "imageID": "", "ready": False,
                                        "restartCount": 0, "state": {"waiting": {"reason": waiting[0],
                                                                                 "message": waiting[1]}}}]
    if unschedulable:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "message": unschedulable}]
    from kubernetes import client

    client.CoreV1Api(op["kube_cluster"].api_client()).patch_namespaced_pod_status(pod, op["job_namespace"],
                                                                                  {"status": status})


def test_a_driver_stuck_unschedulable_fails_at_the_start_deadline_with_reason_driver_unschedulable(op):
    """A driver pod the scheduler can place nowhere stays Pending for ever; startDeadlineSeconds
    ends the job, and the reason says it was never scheduled, with the scheduler's words."""
    kc = op["kc"]
    op["node_agent"].release(op["job_namespace"])  # no node: the scheduler is played below
    kc.apply(h.job_manifest("unplaced", op["s3_bucket"], op["s3_env"]["AWS_ENDPOINT_URL"], startDeadlineSeconds=6,
                            driver={"resources": {"requests": {"cpu": "64"}}}))
    pod = wait_for(lambda: next(iter(kc.pods()), None), 60, "the driver pod", lambda: diagnose(op, "unplaced"))
    kubelet_reports(op, pod["metadata"]["name"], unschedulable="0/1 nodes are available: 1 Insufficient cpu.")
    st = wait_for(lambda: (s := kc.status("unplaced")).get("reason") == "DriverUnschedulable" and s, 10,
                    "reason DriverUnschedulable", lambda: diagnose(op, "unplaced"))
    assert st["phase"] == "Provisioning" and "Insufficient cpu" in st["message"]
    done = finished(op, "unplaced", 60)
    assert done["phase"] == "Failed" and done["reason"] == "DriverUnschedulable", diagnose(op, "unplaced")
    assert "spec.startDeadlineSeconds" in done["message"] and "Insufficient cpu" in done["message"]
    assert kc.pods() == [], "the pending driver is deleted"
    assert any(e["type"] == "Warning" and e["reason"] == "DriverUnschedulable" for e in kc.events("unplaced"))
