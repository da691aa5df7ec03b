"""The new spec fields survive the CRD's structural schema, and the pods and Service the
operator builds from them pass the real apiserver's validation."""
from __future__ import annotations

import json

import pytest
import yaml

from djoperator import children
from djoperator.crd import Job, parse_spec

from .factories import SETTINGS, spec
from .test_job_pods import SCHEDULING
from .test_kuberay_schema import dropped

pytestmark = pytest.mark.k8s

FULL = spec(scheduling=SCHEDULING, queueName="team-a",
            driver={"scheduling": {"priorityClassName": "high", "labels": {"role": "driver"}}},
            models={"claimName": "models", "subPath": "v1"})


def test_new_spec_fields_are_kept_by_the_crd_schema(kube_cluster, dj_crd, kube_namespace):
    manifest = {"apiVersion": "datajuicer.io/v1alpha1", "kind": "DataJuicerJob",
                "metadata": {"name": "sched", "namespace": kube_namespace}, "spec": FULL}
    kube_cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
    stored = json.loads(kube_cluster.kubectl("-n", kube_namespace, "get", "djjob", "sched", "-o", "json").stdout)
    assert dropped(FULL, stored["spec"]) == []
    parse_spec(stored["spec"])  # what the operator reads back is a valid spec


@pytest.mark.parametrize("raw", [FULL, spec(models={"s3Prefix": "s3://b/models/"}, scheduling=SCHEDULING)])
def test_driver_pod_and_dashboard_service_pass_apiserver_validation(kube_cluster, kube_namespace, raw):
    for name in ("high", "batch-low"):  # the admission plugin checks the classes exist
        kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}, "value": 10}))
    uid = json.loads(kube_cluster.kubectl("get", "namespace", kube_namespace, "-o", "json").stdout)["metadata"]["uid"]
    job = Job("sched", kube_namespace, uid, parse_spec(raw))
    pod, svc = children.driver_pod(job, 2, SETTINGS), children.dashboard_service(job, SETTINGS)
    for manifest in (pod, svc):
        manifest["metadata"].pop("ownerReferences")  # the owner CR does not exist here
    kube_cluster.kubectl("create", "-f", "-", input=yaml.safe_dump_all([pod, svc]))
    stored = json.loads(kube_cluster.kubectl("-n", kube_namespace, "get", "pod", pod["metadata"]["name"],
                                             "-o", "json").stdout)
    sent = dict(pod["spec"])
    ours = sent.pop("tolerations", [])  # the apiserver adds its default not-ready/unreachable ones
    assert dropped(sent, stored["spec"]) == []
    assert all(t in stored["spec"]["tolerations"] for t in ours)
    stored_svc = json.loads(kube_cluster.kubectl("-n", kube_namespace, "get", "svc", svc["metadata"]["name"],
                                                 "-o", "json").stdout)
    assert stored_svc["spec"]["selector"] == svc["spec"]["selector"]
