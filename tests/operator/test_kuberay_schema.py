"""The RayClusters the operator emits, stored through KubeRay's real CRD schema: a structural
schema drops unknown fields without an error, so every field sent must come back unchanged."""
from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from djoperator import children
from djoperator.crd import Job, parse_spec

from .factories import SETTINGS, UID, spec
from .test_job_pods import SCHEDULING

pytestmark = pytest.mark.k8s


def dropped(sent: Any, stored: Any, path: str = "spec") -> list[str]:
    """The paths of `sent` that did not come back as sent."""
    if isinstance(sent, dict):
        stored = stored if isinstance(stored, dict) else {}
        return [p for key, value in sent.items() for p in dropped(value, stored.get(key), f"{path}.{key}")]
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [path]
        return [p for i, (a, b) in enumerate(zip(sent, stored)) for p in dropped(a, b, f"{path}[{i}]")]
    return [] if sent == stored else [path]


@pytest.mark.parametrize("ray", [
    {"workerGroups": [{"name": "w", "replicas": 1, "resources": {"limits": {"cpu": "1"}}}]},
    {"autoscaling": True, "head": {"rayStartParams": {"num-cpus": "0"}}},
    {"autoscaling": True, "head": {"scheduling": {"labels": {"role": "head"}}},
     "workerGroups": [{"name": "gpu", "scheduling": {"nodeSelector": {"gpu": "yes"}}}]},
])
def test_the_emitted_raycluster_is_stored_with_nothing_dropped(kube_cluster, kuberay_crd, kube_namespace, ray):
    raw = spec(executorType="ray", ray=ray, storage={"s3": {"endpointUrl": "http://minio:9000",
                                                             "secretRef": {"name": "s3-creds"}}},
               scheduling=SCHEDULING, queueName="team-a", models={"s3Prefix": "s3://b/models/"})
    manifest = children.ray_cluster(Job("demo", kube_namespace, UID, parse_spec(raw)), SETTINGS)
    kube_cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
    stored = client.CustomObjectsApi(kube_cluster.api_client()).get_namespaced_custom_object(
        "ray.io", "v1", kube_namespace, "rayclusters", manifest["metadata"]["name"])
    assert dropped(manifest["spec"], stored["spec"]) == []
    head = stored["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "AWS_ENDPOINT_URL"} <= {e["name"] for e in head["env"]}
