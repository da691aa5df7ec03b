"""What a user passes through to the job's pods: scheduling, Kueue, models; and what the
driver exposes: the dashboard port and Service, its attempt number."""
from __future__ import annotations

import pytest

from djoperator import children
from djoperator.crd import KUEUE_QUEUE_LABEL, Job, SpecError, parse_spec

from .factories import SETTINGS, UID, spec

TOLERATION = {"key": "dedicated", "operator": "Equal", "value": "dj", "effect": "NoSchedule"}
AFFINITY = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["batch"]}]}]}}}
SCHEDULING = {"tolerations": [TOLERATION], "affinity": AFFINITY, "priorityClassName": "batch-low",
              "imagePullSecrets": [{"name": "registry"}], "nodeSelector": {"pool": "batch"},
              "labels": {"team": "data"}, "annotations": {"cost-center": "42"}}


def job(**overrides) -> Job:
    return Job("demo", "ns", UID, parse_spec(spec(**overrides)))


def pods(j: Job) -> dict[str, dict]:
    out = {"driver": children.driver_pod(j, 1, SETTINGS)}
    cluster = children.ray_cluster(j, SETTINGS)
    if cluster is not None:
        out["head"] = cluster["spec"]["headGroupSpec"]["template"]
        for g in cluster["spec"]["workerGroupSpecs"]:
            out[g["groupName"]] = g["template"]
    return out


def test_scheduling_reaches_the_driver_and_every_ray_pod():
    j = job(executorType="ray", scheduling=SCHEDULING)
    found = pods(j)
    assert set(found) == {"driver", "head", "workers"}
    for where, pod in found.items():
        s = pod["spec"]
        assert s["tolerations"] == [TOLERATION] and s["affinity"] == AFFINITY, where
        assert s["priorityClassName"] == "batch-low" and s["imagePullSecrets"] == [{"name": "registry"}], where
        assert s["nodeSelector"] == {"pool": "batch"}, where
        assert pod["metadata"]["labels"]["team"] == "data", where
        assert pod["metadata"]["labels"][children.LABEL_JOB_UID] == UID, where  # ours stay
        assert pod["metadata"]["annotations"] == {"cost-center": "42"}, where


def test_per_pod_scheduling_adds_to_the_common_one():
    j = job(executorType="ray", scheduling={"nodeSelector": {"pool": "batch"}, "tolerations": [TOLERATION]},
            driver={"scheduling": {"nodeSelector": {"pool": "cpu"}, "priorityClassName": "high"}},
            ray={"head": {"scheduling": {"labels": {"role": "head"}}},
                 "workerGroups": [{"name": "gpu", "scheduling": {"nodeSelector": {"gpu": "a100"},
                                                                 "tolerations": [{"key": "gpu", "operator": "Exists"}]}}]})
    found = pods(j)
    assert found["driver"]["spec"]["nodeSelector"] == {"pool": "cpu"}
    assert found["driver"]["spec"]["priorityClassName"] == "high"
    assert "priorityClassName" not in found["head"]["spec"]
    assert found["head"]["metadata"]["labels"]["role"] == "head"
    assert found["gpu"]["spec"]["nodeSelector"] == {"pool": "batch", "gpu": "a100"}
    assert [t["key"] for t in found["gpu"]["spec"]["tolerations"]] == ["dedicated", "gpu"]


@pytest.mark.parametrize("labels, words", [
    ({"datajuicer.io/job": "other"}, "set by the operator"),
    ({KUEUE_QUEUE_LABEL: "q"}, "spec.queueName"),
])
def test_labels_the_operator_owns_are_refused_by_name(labels, words):
    with pytest.raises(SpecError) as err:
        parse_spec(spec(scheduling={"labels": labels}))
    assert words in str(err.value) and "spec.scheduling" in str(err.value)


def test_kueue_queue_goes_on_the_object_kueue_admits():
    ray = job(executorType="ray", queueName="team-a")
    assert children.ray_cluster(ray, SETTINGS)["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "team-a"
    assert KUEUE_QUEUE_LABEL not in children.driver_pod(ray, 1, SETTINGS)["metadata"]["labels"]
    plain = job(queueName="team-a")
    assert children.driver_pod(plain, 1, SETTINGS)["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "team-a"


def test_models_from_a_claim_are_mounted_read_only_everywhere_with_the_cache_env():
    j = job(executorType="ray", models={"claimName": "models", "subPath": "v3"})
    for where, pod in pods(j).items():
        s = pod["spec"]
        assert {"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in s["volumes"]
        c = s["containers"][0]
        assert {"name": "models", "mountPath": "/dj/models", "readOnly": True, "subPath": "v3"} in c["volumeMounts"]
        assert {"name": "DATA_JUICER_MODELS_CACHE", "value": "/dj/models"} in c["env"], where
        assert "initContainers" not in s


def test_models_from_s3_are_copied_by_an_init_container_before_the_job_starts():
    j = job(executorType="ray", models={"s3Prefix": "s3://b/models/", "sizeLimit": "5Gi"},
            storage={"s3": {"endpointUrl": "http://minio:9000", "secretRef": {"name": "s3-creds"}}})
    for where, pod in pods(j).items():
        s = pod["spec"]
        assert {"name": "models", "emptyDir": {"sizeLimit": "5Gi"}} in s["volumes"], where
        (init,) = s["initContainers"]
        assert init["args"] == ["s3://b/models/", "/dj/models"]
        assert {e["name"] for e in init["env"]} >= {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"}
        assert init["volumeMounts"] == [{"name": "models", "mountPath": "/dj/models"}]  # writable only here
        assert {"name": "DATA_JUICER_MODELS_CACHE", "value": "/dj/models"} in s["containers"][0]["env"]


@pytest.mark.parametrize("models, words", [
    ({}, "exactly one of claimName"),
    ({"claimName": "m", "s3Prefix": "s3://b/m"}, "exactly one of claimName"),
    ({"s3Prefix": "/local"}, "must start with s3://"),
    ({"s3Prefix": "s3://b/m", "subPath": "x"}, "subPath needs"),
])
def test_models_spec_errors_name_the_field(models, words):
    with pytest.raises(SpecError) as err:
        parse_spec(spec(models=models))
    assert words in str(err.value)


def test_driver_exposes_the_dashboard_port_and_its_attempt():
    pod = children.driver_pod(job(), 3, SETTINGS)
    c = pod["spec"]["containers"][0]
    assert c["ports"] == [{"name": "dashboard", "containerPort": 8000, "protocol": "TCP"}]
    assert {"name": "DJ_ATTEMPT", "value": "3"} in c["env"]
    assert c["readinessProbe"]["httpGet"]["port"] == "dashboard"


def test_dashboard_service_selects_whichever_driver_runs():
    j = job()
    svc = children.dashboard_service(j, SETTINGS)
    assert svc["metadata"]["name"] == "demo-dashboard"
    assert svc["metadata"]["ownerReferences"][0]["uid"] == UID
    driver_labels = children.driver_pod(j, 7, SETTINGS)["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= driver_labels.items()
    assert svc["spec"]["ports"] == [{"name": "dashboard", "port": 8000, "targetPort": "dashboard", "protocol": "TCP"}]
    assert children.dashboard_url(j, SETTINGS) == "http://demo-dashboard.ns.svc:8000"
    assert children.ray_dashboard_url(j) is None
    assert children.ray_dashboard_url(job(executorType="ray")) == "http://demo-ray-head-svc.ns.svc:8265"


@pytest.mark.s3
def test_the_models_sync_init_container_copies_the_prefix(s3_env, s3_bucket, tmp_path):
    """The init container's own command, run here against the test S3 with the env it gets."""
    import subprocess
    import sys

    from .helpers import s3fs_client

    fs = s3fs_client(s3_env)
    fs.pipe({f"{s3_bucket}/models/lid.176.bin": b"fasttext", f"{s3_bucket}/models/en.sp.model": b"sp",
             f"{s3_bucket}/models/tokenizer/tokenizer.json": b"{}", f"{s3_bucket}/other/x": b"no"})
    j = job(models={"s3Prefix": f"s3://{s3_bucket}/models/", "mountPath": str(tmp_path / "models")},
            storage={"s3": {"endpointUrl": s3_env["AWS_ENDPOINT_URL"], "secretRef": {"name": "s3-creds"}}})
    (init,) = children.driver_pod(j, 1, SETTINGS)["spec"]["initContainers"]
    env = {e["name"]: e["value"] for e in init["env"] if "value" in e}
    env.update({k: v for k, v in s3_env.items() if k.startswith("AWS_")})  # what the Secret refs resolve to
    assert init["command"][0] == "python"
    done = subprocess.run([sys.executable, *init["command"][1:], *init["args"]], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    got = sorted(str(p.relative_to(tmp_path / "models")) for p in (tmp_path / "models").rglob("*") if p.is_file())
    assert got == ["en.sp.model", "lid.176.bin", "tokenizer/tokenizer.json"]
    assert (tmp_path / "models" / "lid.176.bin").read_bytes() == b"fasttext"
