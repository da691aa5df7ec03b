"""The operator end to end: real apiserver, real dj-operator, real dj-process on moto S3."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.s3 import SECRET_KEY

from tests.support.wait import wait_for

from .helpers import REPO, Kubectl, job_manifest, read_jsonl, s3_keys, state_volume_job, upload_dataset

pytestmark = [pytest.mark.k8s, pytest.mark.s3]


@pytest.fixture
def kc(kube_cluster, job_namespace) -> Kubectl:
    return Kubectl(kube_cluster, job_namespace)


def diagnose(kc: Kubectl, name: str, dj_operator, node_agent) -> str:
    """What a person needs when a lifecycle test fails: status, events, driver output."""
    logs = []
    for (ns, pod), path in node_agent.logs.items():
        if ns == kc.namespace:
            code = node_agent.exits.get((ns, pod))
            logs.append(f"--- {pod} (exit {code}):\n" + path.read_text()[-3000:])
    events = [f"{e['type']} {e['reason']}: {e['message']}" for e in kc.events(name)]
    return (f"status: {kc.status(name)}\npods: {[p['metadata']['name'] for p in kc.pods()]}\n"
            + "events:\n  " + "\n  ".join(events) + "\n" + "\n".join(logs)
            + f"\n--- operator:\n{dj_operator.tail(15)}")


def test_job_runs_to_success_with_progress_in_status(kc, s3_env, s3_bucket, s3_secret, dj_operator, node_agent):
    upload_dataset(s3_env, s3_bucket, 120)
    kc.apply(job_manifest("demo", s3_bucket, s3_env["AWS_ENDPOINT_URL"], rows_per_partition=40, slow=0.5))
    why = lambda: diagnose(kc, "demo", dj_operator, node_agent)  # noqa: E731

    running = wait_for(lambda: (s := kc.status("demo")).get("phase") == "Running" and s.get("partitions") and s,
                       60, "a Running job with partitions in status", why)
    assert running["jobId"].startswith("demo-") and running["children"]["driverPod"] == "demo-driver-1"
    done = wait_for(lambda: (s := kc.status("demo")).get("phase") in ("Succeeded", "Failed") and s, 120,
                    "the job to finish", why)
    assert done["phase"] == "Succeeded", why()
    assert done["partitions"]["total"] == 3 and done["partitions"]["completed"] == 3
    assert done["progress"]["percent"] == 100.0 and done["progress"]["partitionsDone"] == "3/3"
    rows = read_jsonl(s3_env, f"s3://{s3_bucket}/out/demo.jsonl")
    assert 0 < len(rows) <= 120 and not any("https://" in r["text"] for r in rows)
    assert s3_keys(s3_env, f"s3://{s3_bucket}/checkpoints")
    printed = kc("get", "djjobs").stdout
    assert "Succeeded" in printed and "3/3" in printed
    reasons = [e["reason"] for e in kc.events("demo")]
    assert {"Accepted", "DriverStarting", "DriverRunning", "Completed"} <= set(reasons)
    assert SECRET_KEY not in kc("get", "djjob", "demo", "-o", "yaml").stdout


ROWS, PARTITION, SLOW = 120, 40, 0.8


@pytest.fixture(scope="session")
def reference_rows(tmp_path_factory) -> list[dict]:
    """The output of one uninterrupted local dj-process run of the same recipe and data."""
    import subprocess
    import sys

    import orjson
    import yaml

    from djworker.demo_data import write_jsonl

    tmp = tmp_path_factory.mktemp("reference")
    write_jsonl(str(tmp / "data.jsonl"), ROWS)
    recipe = job_manifest("ref", "unused", "unused", rows_per_partition=PARTITION, slow=SLOW)["spec"]["recipe"]
    recipe.update(dataset_path=str(tmp / "data.jsonl"), export_path=str(tmp / "out.jsonl"), work_dir=str(tmp / "w"),
                  event_log_dir=str(tmp / "events"), checkpoint_dir=str(tmp / "ckpt"))
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(REPO),
           "DJ_EXTRA_OP_MODULES": "tests.support.test_ops", "HOME": str(tmp)}
    done = subprocess.run(["dj-process", "--config", str(tmp / "recipe.yaml"), "--job_id", "ref", "--quiet",
                           "--checkpoint.strategy", "every_n_ops", "--checkpoint.n_ops", "2"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    return [orjson.loads(line) for line in (tmp / "out.jsonl").read_bytes().splitlines() if line]


def engine_events(node_agent, kc: Kubectl, name: str) -> list[dict]:
    """The engine's event log on the job's state volume (the agent's PVC directory)."""
    st = kc.status(name)
    return state_volume_job(node_agent.volume_dir(kc.namespace, st["children"]["eventLogClaim"]), st["jobId"]).events()


def start_slow_job(kc, s3_env, s3_bucket, name: str, **spec) -> None:
    upload_dataset(s3_env, s3_bucket, ROWS)
    kc.apply(job_manifest(name, s3_bucket, s3_env["AWS_ENDPOINT_URL"], rows_per_partition=PARTITION, slow=SLOW,
                          **spec))


def wait_mid_run(kc, name: str, why) -> dict:
    """A Running job with at least one partition done and at least one to go."""
    return wait_for(lambda: (s := kc.status(name)).get("phase") == "Running"
                    and 1 <= (s.get("partitions") or {}).get("completed", 0) < (s.get("partitions") or {}).get("total", 0)
                    and s, 90, f"{name} to be mid-run", why)


def test_stop_then_resume_gives_the_uninterrupted_output(kc, s3_env, s3_bucket, s3_secret, dj_operator, node_agent,
                                                        reference_rows):
    start_slow_job(kc, s3_env, s3_bucket, "stopper")
    why = lambda: diagnose(kc, "stopper", dj_operator, node_agent)  # noqa: E731
    wait_mid_run(kc, "stopper", why)

    kc.patch_stop("stopper", True)
    stopped = wait_for(lambda: (s := kc.status("stopper")).get("phase") == "Stopped" and s, 60, "Stopped", why)
    assert node_agent.exits[(kc.namespace, "stopper-driver-1")] == 130, why()
    assert kc.pods() == []
    assert s3_keys(s3_env, f"s3://{s3_bucket}/checkpoints"), "checkpoints are kept"
    assert "JOB_STOPPED" in [e["event_type"] for e in engine_events(node_agent, kc, "stopper")]
    assert next(c for c in stopped["conditions"] if c["type"] == "Stopped")["status"] == "True"

    kc.patch_stop("stopper", False)
    done = wait_for(lambda: (s := kc.status("stopper")).get("phase") in ("Succeeded", "Failed") and s, 120,
                    "the resumed job to finish", why)
    assert done["phase"] == "Succeeded" and done["attempt"] == 2, why()
    assert read_jsonl(s3_env, f"s3://{s3_bucket}/out/stopper.jsonl") == reference_rows
    types = [e["event_type"] for e in engine_events(node_agent, kc, "stopper")]
    assert "JOB_RESUMED" in types
    assert types.count("PARTITION_COMPLETE") == 3, "finished partitions are not redone"


def test_killed_driver_is_retried_and_resumes(kc, s3_env, s3_bucket, s3_secret, dj_operator, node_agent,
                                              reference_rows):
    start_slow_job(kc, s3_env, s3_bucket, "crashy")
    why = lambda: diagnose(kc, "crashy", dj_operator, node_agent)  # noqa: E731
    wait_mid_run(kc, "crashy", why)
    node_agent.kill(kc.namespace, "crashy-driver-1")

    done = wait_for(lambda: (s := kc.status("crashy")).get("phase") in ("Succeeded", "Failed") and s, 120,
                    "the retried job to finish", why)
    assert done["phase"] == "Succeeded" and done["attempt"] == 2 and done["failures"] == 1, why()
    assert read_jsonl(s3_env, f"s3://{s3_bucket}/out/crashy.jsonl") == reference_rows
    reasons = [e["reason"] for e in kc.events("crashy")]
    assert "DriverFailed" in reasons
    assert [p for ns, p in node_agent.started_pods if ns == kc.namespace] == ["crashy-driver-1", "crashy-driver-2"]
    assert "JOB_RESUMED" in [e["event_type"] for e in engine_events(node_agent, kc, "crashy")]


def test_deleting_a_running_job_stops_the_driver_and_removes_its_children(kc, s3_env, s3_bucket, s3_secret,
                                                                           dj_operator, node_agent):
    start_slow_job(kc, s3_env, s3_bucket, "doomed")
    why = lambda: diagnose(kc, "doomed", dj_operator, node_agent)  # noqa: E731
    wait_mid_run(kc, "doomed", why)
    kc("delete", "djjob", "doomed", "--wait=false")

    wait_for(lambda: kc.get("djjob", "doomed") is None, 60, "the job (and its finalizer) to go", why)
    assert kc.pods() == []
    assert [c["metadata"]["name"] for c in kc.get("configmaps") or [] if c["metadata"]["name"].startswith("doomed")] == []
    pvcs = kc.get("pvc") or []
    assert all(p["metadata"].get("deletionTimestamp") for p in pvcs), "PVC deletion requested (no controller here)"
    assert node_agent.exits[(kc.namespace, "doomed-driver-1")] == 130, "stopped gracefully, checkpointed"


def test_restarting_the_operator_mid_run_neither_duplicates_the_driver_nor_loses_status(
        kc, s3_env, s3_bucket, s3_secret, dj_operator, node_agent):
    start_slow_job(kc, s3_env, s3_bucket, "steady")
    why = lambda: diagnose(kc, "steady", dj_operator, node_agent)  # noqa: E731
    before = wait_mid_run(kc, "steady", why)
    dj_operator.kill()
    try:
        dj_operator.start()
    finally:
        if dj_operator.proc is None:
            dj_operator.start()
    done = wait_for(lambda: (s := kc.status("steady")).get("phase") in ("Succeeded", "Failed") and s, 120,
                    "the job to finish", why)
    assert done["phase"] == "Succeeded" and done["attempt"] == 1 and done["jobId"] == before["jobId"], why()
    assert [p for ns, p in node_agent.started_pods if ns == kc.namespace] == ["steady-driver-1"]


def test_schema_rejects_invalid_specs_at_apply(kc):
    bad = job_manifest("bad", "b", "http://x", executorType="spark")
    done = kc("apply", "-f", "-", input=__import__("yaml").safe_dump(bad), check=False)
    assert done.returncode != 0 and "spec.executorType" in done.stderr and "ray_partitioned" in done.stderr
    neither = job_manifest("bad", "b", "http://x")
    del neither["spec"]["recipe"]
    done = kc("apply", "-f", "-", input=__import__("yaml").safe_dump(neither), check=False)
    assert done.returncode != 0 and "oneOf" in done.stderr
    assert "resumes" in kc("explain", "djjob.spec.stop").stdout  # the schema documents itself


def test_spec_the_schema_cannot_check_fails_with_invalid_spec(kc, dj_operator, node_agent):
    bad = job_manifest("shape", "b", "http://x", executorType="ray",
                       ray={"workerGroups": [{"name": "w", "replicas": 5, "maxReplicas": 2}]})
    kc.apply(bad)
    st = wait_for(lambda: (s := kc.status("shape")).get("phase") == "Failed" and s, 30, "Failed",
                  lambda: diagnose(kc, "shape", dj_operator, node_agent))
    assert st["reason"] == "InvalidSpec" and "minReplicas <= replicas <= maxReplicas" in st["message"]
    assert kc.pods() == [] and not kc.get("rayclusters")


def test_invalid_recipe_fails_once_without_retries_and_the_ttl_cleans_up(kc, s3_env, s3_bucket, s3_secret, dj_operator, node_agent):
    upload_dataset(s3_env, s3_bucket, 20)
    bad = job_manifest("typo", s3_bucket, s3_env["AWS_ENDPOINT_URL"], cleanup={"ttlSecondsAfterFinished": 2})
    bad["spec"]["recipe"]["process"] = [{"text_length_filter": {"min_length": 5}}]
    kc.apply(bad)
    st = wait_for(lambda: (s := kc.status("typo")).get("phase") == "Failed" and s, 60, "Failed",
                  lambda: diagnose(kc, "typo", dj_operator, node_agent))
    assert st["reason"] == "InvalidRecipe" and st["exitCode"] == 2 and st["attempt"] == 1
    assert "min_length" in st["message"]
    assert [p for ns, p in node_agent.started_pods if ns == kc.namespace] == ["typo-driver-1"]
    wait_for(lambda: kc.get("djjob", "typo") is None, 30, "the TTL to delete the finished job")
    assert kc.pods() == []


def test_schema_rejects_bad_env_names_and_quantities_at_apply(kc):
    """A 422 from the pod create would come too late (the job already says DriverStarting):
    the CRD refuses what it can at admission."""
    import yaml
    bad_env = job_manifest("badenv", "b", "http://x")
    bad_env["spec"]["driver"]["env"].append({"name": "1 NOT VALID", "value": "x"})
    done = kc("apply", "-f", "-", input=yaml.safe_dump(bad_env), check=False)
    assert done.returncode != 0 and "spec.driver.env" in done.stderr, done.stderr
    bad_quantity = job_manifest("badqty", "b", "http://x")
    bad_quantity["spec"]["driver"]["resources"] = {"limits": {"memory": "lots"}}
    done = kc("apply", "-f", "-", input=yaml.safe_dump(bad_quantity), check=False)
    assert done.returncode != 0 and "spec.driver.resources.limits.memory" in done.stderr, done.stderr
    fine = job_manifest("fineqty", "b", "http://x", stop=True)
    fine["spec"]["driver"]["resources"] = {"limits": {"memory": "512Mi", "cpu": 2}, "requests": {"cpu": "500m"}}
    kc.apply(fine)
    assert kc.job("fineqty")["spec"]["driver"]["resources"]["limits"]["cpu"] == 2


def test_a_same_named_ray_cluster_not_ours_fails_the_job_at_once(kc, dj_operator, node_agent):
    import yaml
    theirs = yaml.safe_load((REPO / "tests" / "data" / "kuberay" / "raycluster-sample.yaml").read_text()) \
        if (REPO / "tests" / "data" / "kuberay" / "raycluster-sample.yaml").exists() else None
    theirs = theirs or {
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {},
        "spec": {"headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [
            {"name": "ray-head", "image": "rayproject/ray:2.60.0"}]}}}}}
    theirs["metadata"] = {"name": "clash-ray", "namespace": kc.namespace}
    kc.apply(theirs)
    kc.apply(job_manifest("clash", "b", "http://x", executorType="ray"))
    st = wait_for(lambda: (s := kc.status("clash")).get("phase") == "Failed" and s, 30, "Failed",
                  lambda: diagnose(kc, "clash", dj_operator, node_agent))
    assert st["reason"] == "RayClusterNameConflict" and "clash-ray" in st["message"]
    assert kc.get("raycluster", "clash-ray") is not None, "a cluster that is not ours is never deleted"
    assert kc.pods() == []


def test_a_quota_that_refuses_the_driver_shows_in_status_and_fails_at_the_start_deadline(kc, kube_cluster, dj_operator,
                                                                                          node_agent):
    import yaml
    from kubernetes.client import CoreV1Api
    kc("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}))
    # what the quota controller (absent here) would write; admission enforces hard against used
    CoreV1Api(kube_cluster.api_client()).patch_namespaced_resource_quota_status(
        "no-pods", kc.namespace, {"status": {"hard": {"pods": "0"}, "used": {"pods": "0"}}})
    kc.apply(job_manifest("quota", "b", "http://x", startDeadlineSeconds=5))
    why = lambda: diagnose(kc, "quota", dj_operator, node_agent)  # noqa: E731
    refused = wait_for(lambda: (s := kc.status("quota")).get("reason") == "CreateForbidden" and s, 30,
                       "the refusal in status", why)
    assert refused["phase"] == "Provisioning" and "quota-driver-1" in refused["message"], why()
    failed = wait_for(lambda: (s := kc.status("quota")).get("phase") == "Failed" and s, 30, "Failed", why)
    assert failed["reason"] == "CreateForbidden" and "spec.startDeadlineSeconds" in failed["message"]
    warnings = [e for e in kc.events("quota") if e["reason"] == "CreateForbidden"]
    assert warnings and all(e["type"] == "Warning" for e in warnings)
    assert sum(e.get("count") or 1 for e in warnings) <= 3, "reported when it changes, not on every tick"


def test_a_driver_on_a_lost_node_is_force_deleted_and_the_job_resumes(kc, s3_env, s3_bucket, s3_secret, dj_operator,
                                                                      node_agent, reference_rows):
    start_slow_job(kc, s3_env, s3_bucket, "lost")
    why = lambda: diagnose(kc, "lost", dj_operator, node_agent)  # noqa: E731
    wait_mid_run(kc, "lost", why)
    node_agent.lose_node_of(kc.namespace, "lost-driver-1")
    # the node controller's eviction: a deletion the lost kubelet never confirms
    kc("delete", "pod", "lost-driver-1", "--grace-period=1", "--wait=false")
    wait_for(lambda: kc.status("lost").get("reason") == "DriverTerminating", 30, "DriverTerminating", why)
    done = wait_for(lambda: (s := kc.status("lost")).get("phase") in ("Succeeded", "Failed") and s, 150,
                    "the job to finish on a new driver", why)
    assert done["phase"] == "Succeeded" and done["attempt"] == 2, why()
    assert read_jsonl(s3_env, f"s3://{s3_bucket}/out/lost.jsonl") == reference_rows
    assert "DriverLost" in [e["reason"] for e in kc.events("lost")]
