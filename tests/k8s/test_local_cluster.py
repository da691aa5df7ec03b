"""The test cluster itself: a real apiserver that stores, validates, authorizes and restarts.

If these fail, every operator test against kube_cluster is meaningless, so each one checks
a property the others rely on, through kubectl or the official client as a user would."""
from __future__ import annotations

import json

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.k8s import OPERATOR_SA_TOKEN
from tests.support.wait import wait_for

pytestmark = pytest.mark.k8s


def raycluster(name: str) -> dict:
    """The smallest RayCluster KubeRay's v1 schema accepts: one head, one worker group."""
    pod = {"spec": {"containers": [{"name": "ray", "image": "rayproject/ray:2.60.0"}]}}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name},
        "spec": {
            "headGroupSpec": {"rayStartParams": {}, "template": pod},
            "workerGroupSpecs": [
                {"groupName": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 2,
                 "rayStartParams": {}, "template": pod},
            ],
        },
    }


def test_configmap_written_with_kubectl_reads_back(kube_cluster, kube_namespace):
    kube_cluster.kubectl(
        "create", "configmap", "recipe", "-n", kube_namespace, "--from-literal=np=4"
    )
    shown = kube_cluster.kubectl("get", "configmap", "recipe", "-n", kube_namespace, "-o", "json")
    got = json.loads(shown.stdout)
    assert got["data"] == {"np": "4"}


def test_kuberay_raycluster_is_stored_and_read_back(kube_cluster, kuberay_crd, kube_namespace):
    kube_cluster.kubectl(
        "apply", "-n", kube_namespace, "-f", "-", input=json.dumps(raycluster("rc"))
    )
    api = client.CustomObjectsApi(kube_cluster.api_client())
    got = api.get_namespaced_custom_object("ray.io", "v1", kube_namespace, "rayclusters", "rc")
    assert got["spec"]["workerGroupSpecs"][0]["maxReplicas"] == 2
    assert got["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["name"] == "ray"


def test_raycluster_schema_is_enforced(kube_cluster, kuberay_crd, kube_namespace):
    bad = raycluster("bad")
    del bad["spec"]["workerGroupSpecs"][0]["groupName"]
    done = kube_cluster.kubectl(
        "create", "-n", kube_namespace, "-f", "-", input=json.dumps(bad), check=False
    )
    assert done.returncode != 0
    assert "groupName" in done.stderr


def test_custom_resource_writes_leave_the_apiserver_up(kube_cluster, kuberay_crd, kube_namespace):
    # The write path that a Go 1.19 build of v1.20.2 segfaults on: create, patch, status.
    api = client.CustomObjectsApi(kube_cluster.api_client())
    args = ("ray.io", "v1", kube_namespace, "rayclusters")
    api.create_namespaced_custom_object(*args, raycluster("rc"))
    api.patch_namespaced_custom_object(
        *args, "rc", {"spec": {"workerGroupSpecs": [
            {**raycluster("rc")["spec"]["workerGroupSpecs"][0], "replicas": 2}]}},
    )
    api.patch_namespaced_custom_object_status(*args, "rc", {"status": {"state": "ready"}})
    got = api.get_namespaced_custom_object(*args, "rc")
    assert got["spec"]["workerGroupSpecs"][0]["replicas"] == 2
    assert got["status"]["state"] == "ready"
    assert kube_cluster.kubectl("get", "--raw", "/readyz").stdout == "ok"


def test_service_account_token_is_forbidden_until_a_role_binding_grants_it(
    kube_cluster, kube_namespace
):
    as_operator = kube_cluster.kubeconfig_for(OPERATOR_SA_TOKEN)
    listing = ("get", "configmaps", "-n", kube_namespace)
    denied = kube_cluster.kubectl(*listing, kubeconfig=as_operator, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()

    kube_cluster.kubectl(
        "create", "role", "read-configmaps", "-n", kube_namespace,
        "--verb=get,list", "--resource=configmaps",
    )
    kube_cluster.kubectl(
        "create", "rolebinding", "operator-reads", "-n", kube_namespace,
        "--role=read-configmaps", "--serviceaccount=dj-system:datajuicer-operator",
    )
    # RBAC changes reach the authorizer through an informer: allow a short delay.
    wait_for(
        lambda: kube_cluster.kubectl(*listing, kubeconfig=as_operator, check=False).returncode == 0,
        15,
        "the RoleBinding to take effect",
    )
    still_denied = kube_cluster.kubectl(
        "get", "secrets", "-n", kube_namespace, kubeconfig=as_operator, check=False
    )
    assert "forbidden" in still_denied.stderr.lower()


def test_objects_survive_an_apiserver_restart(kube_cluster, kube_namespace):
    kube_cluster.kubectl(
        "create", "configmap", "before", "-n", kube_namespace, "--from-literal=k=v"
    )
    core = client.CoreV1Api(kube_cluster.api_client())

    kube_cluster.stop_apiserver()
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.read_namespaced_config_map("before", kube_namespace, _request_timeout=5)
    kube_cluster.start_apiserver()

    assert core.read_namespaced_config_map("before", kube_namespace).data == {"k": "v"}
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("never-created", kube_namespace)
    assert missing.value.status == 404
