"""Every pod and container the operator emits passes the PodSecurity "restricted" profile."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from djoperator import children
from djoperator.crd import Job, parse_spec

from .factories import SETTINGS, UID, spec
from .restricted import container_violations, violations

MODELS_S3 = {"s3Prefix": "s3://bucket/models/"}
SPECS = {
    "default": spec(),
    "ray": spec(executorType="ray", ray={"workerGroups": [{"name": "a"}, {"name": "b", "replicas": 2}]}),
    "autoscaling": spec(executorType="ray", ray={"autoscaling": True}),
    "models-s3": spec(executorType="ray", models=MODELS_S3),
    "models-pvc": spec(models={"claimName": "models", "subPath": "v1"}),
    "scheduled": spec(executorType="ray", scheduling={"tolerations": [{"key": "gpu", "operator": "Exists"}],
                                                      "priorityClassName": "batch"}),
}


def emitted_pods(job: Job) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, pod spec, pod metadata) of every pod the job's children make, templates included."""
    driver = children.driver_pod(job, 1, SETTINGS)
    yield "driver", driver["spec"], driver["metadata"]
    cluster = children.ray_cluster(job, SETTINGS)
    if cluster is not None:
        head = cluster["spec"]["headGroupSpec"]["template"]
        yield "ray head", head["spec"], head["metadata"]
        for group in cluster["spec"]["workerGroupSpecs"]:
            yield f"ray workers {group['groupName']}", group["template"]["spec"], group["template"]["metadata"]


@pytest.mark.parametrize("name", SPECS)
def test_every_emitted_container_passes_the_restricted_profile(name):
    job = Job("demo", "ns", UID, parse_spec(SPECS[name]))
    found = []
    for where, pod_spec, meta in emitted_pods(job):
        found += [f"{where}: {v}" for v in violations(pod_spec, meta.get("annotations"))]
    assert found == []


def test_the_autoscaler_container_kuberay_adds_is_restricted_too():
    job = Job("demo", "ns", UID, parse_spec(SPECS["autoscaling"]))
    cluster = children.ray_cluster(job, SETTINGS)["spec"]
    head_pod = cluster["headGroupSpec"]["template"]["spec"]
    sc = cluster["autoscalerOptions"]["securityContext"]
    assert container_violations(sc, head_pod["securityContext"]) == []
    # and on its own, should KubeRay ever place it in a pod without our pod-level context
    assert container_violations(sc, {}) == []


def test_models_sync_init_container_is_checked_like_the_others():
    job = Job("demo", "ns", UID, parse_spec(SPECS["models-s3"]))
    pod_spec = children.driver_pod(job, 1, SETTINGS)["spec"]
    assert [c["name"] for c in pod_spec["initContainers"]] == ["models-sync"]
    loosened = {**pod_spec, "initContainers": [{**pod_spec["initContainers"][0], "securityContext": {}}]}
    assert any("models-sync" in v and "allowPrivilegeEscalation" in v for v in violations(loosened))


@pytest.mark.parametrize("change, rule", [
    (lambda p: p["securityContext"].pop("seccompProfile") and p["containers"][0]["securityContext"].pop(
        "seccompProfile"), "seccompProfile"),
    (lambda p: p["containers"][0]["securityContext"]["capabilities"].update(drop=[]), "capabilities.drop"),
    (lambda p: p["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation"),
    (lambda p: p["securityContext"].pop("runAsNonRoot") and p["containers"][0]["securityContext"].pop(
        "runAsNonRoot"), "runAsNonRoot"),
    (lambda p: p.update(hostNetwork=True), "hostNetwork"),
    (lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
])
def test_the_checker_catches_each_rule_it_enforces(change, rule):
    """The profile check above can fail: each loosened pod is refused, naming the rule."""
    import copy

    pod_spec = copy.deepcopy(children.driver_pod(Job("demo", "ns", UID, parse_spec(spec())), 1, SETTINGS)["spec"])
    change(pod_spec)
    assert any(rule in v for v in violations(pod_spec))
