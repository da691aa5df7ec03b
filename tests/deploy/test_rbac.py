"""The chart's RBAC is least privilege, proven on the real apiserver (RBAC on):

* sufficient: the chart is installed by Helm v4 (helm-python-sdk), and the operator runs
  the Deployment's own command with nothing but the chart's ServiceAccount token through a
  job's whole lifecycle: create, progress, stop, resume, success, TTL deletion, and a ray
  job's RayCluster created, stopped and deleted;
* necessary: taking any one verb out of the ClusterRole makes the apiserver refuse exactly
  that verb (and nothing else) to the ServiceAccount; docs/deploy.md maps every verb to the
  operator call that uses it; and a few removals are run for real, the job then stuck with
  the operator's Forbidden error on it. On a fresh apiserver, the two rules no lifecycle
  needs on this one are shown to matter: the CRD watch (a CRD created while the operator
  runs) and `update` on datajuicerjobs/finalizers (under OwnerReferencesPermissionEnforcement).
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.operator.helpers import Kubectl, job_manifest, read_jsonl, upload_dataset
from tests.support.k8s import (OPERATOR_SA_GROUPS, OPERATOR_SA_TOKEN, OPERATOR_SA_USER, LocalCluster, free_port)
from tests.support.node_agent import PROGRESS_ANNOTATION, NodeAgent
from tests.support.wait import wait_for

from .chart import (CHART, CRD_NAME, NAMESPACE, RELEASE, REPO, documented_grants, grants, is_established, only,
                    operator_container, render, without)
from .operator_process import ChartOperator

pytestmark = [pytest.mark.k8s, pytest.mark.s3]


def loopback_values(health_port: int) -> dict[str, Any]:
    """The chart's defaults, plus what a loopback test needs: a free health port, a fast
    timer, and driver progress read from the node agent's annotation."""
    return {"health": {"port": health_port}, "readiness": {"port": free_port()},
            "metrics": {"port": free_port()},
            "operator": {"interval": 0.5, "forceDeleteAfterSeconds": 5,
                         "extraArgs": [f"--progress-endpoint-annotation={PROGRESS_ANNOTATION}"]}}


@dataclass
class Release:
    manifests: list[dict[str, Any]]
    values: dict[str, Any]
    chart: Path

    @property
    def cluster_role(self) -> dict[str, Any]:
        return only(self.manifests, "ClusterRole")


def helm_config(cluster: LocalCluster):
    import helm_python as helm

    return helm.Config(kubeconfig_path=str(cluster.kubeconfig), namespace=NAMESPACE)


def parsed(release: dict[str, Any]) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(release["manifest"]) if doc]


def chart_without_crds(tmp: Path) -> Path:
    """The chart as `helm install --skip-crds` sees it. The session's CRD is already there
    (applied by kubectl, like tests/operator does), and Helm 4 server-side-applies crds/
    even over an existing CRD, failing on the other field manager's ownership."""
    copy = tmp / CHART.name
    shutil.copytree(CHART, copy, ignore=shutil.ignore_patterns("crds"))
    return copy


@pytest.fixture(scope="module")
def release(kube_cluster: LocalCluster, chart_crd: str, kuberay_crd: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    """`helm install datajuicer-operator charts/datajuicer-operator -n dj-system --create-namespace
    --skip-crds`; the clean-cluster test below has Helm install the CRD too."""
    values = loopback_values(free_port())
    chart = chart_without_crds(tmp_path_factory.mktemp("chart"))
    with helm_config(kube_cluster) as cfg:
        installed = cfg.install(str(chart), RELEASE, values, create_namespace=True, timeout=60)
        assert installed["status"] == "deployed"
        yield Release(parsed(installed), values, chart)
        cfg.uninstall(RELEASE, ignore_not_found=True)


@pytest.fixture(scope="module")
def agent(kube_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAgent]:
    """The test kubelet, as admin. RayClusters never turn ready: there is no Ray here, and a
    ray job waiting in Provisioning is all the RayCluster verbs need."""
    node = NodeAgent(kube_cluster.api_client(), tmp_path_factory.mktemp("deploy-node"))
    node.rayclusters_ready = False
    node.start()
    yield node
    node.stop()


@pytest.fixture(scope="module")
def operator(release: Release, kube_cluster: LocalCluster, agent: NodeAgent,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartOperator]:
    """The Deployment's container, run with the ServiceAccount's token only (never admin)."""
    proc = ChartOperator(operator_container(release.manifests), kube_cluster.kubeconfig_for(OPERATOR_SA_TOKEN),
                         tmp_path_factory.mktemp("deploy-operator") / "dj-operator.log")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def kc(kube_cluster: LocalCluster, kube_namespace: str, agent: NodeAgent, s3_env: dict[str, str]) -> Iterator[Kubectl]:
    """A fresh namespace the node agent serves, holding the S3 credentials Secret."""
    agent.adopt(kube_namespace)
    kc = Kubectl(kube_cluster, kube_namespace)
    kc("create", "secret", "generic", "s3-creds", f"--from-literal=AWS_ACCESS_KEY_ID={s3_env['AWS_ACCESS_KEY_ID']}",
       f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_env['AWS_SECRET_ACCESS_KEY']}")
    yield kc
    agent.release(kube_namespace)


def diagnose(kc: Kubectl, operator: ChartOperator, agent: NodeAgent) -> str:
    jobs = {j["metadata"]["name"]: j.get("status", {}).get("phase") for j in kc.get("djjobs") or []}
    events = [f"{e['involvedObject']['name']} {e['type']} {e['reason']}: {e['message'][:300]}"
              for e in kc.get("events") or []]
    logs = [f"--- {pod} (exit {agent.exits.get((ns, pod))}):\n{path.read_text()[-1500:]}"
            for (ns, pod), path in agent.logs.items() if ns == kc.namespace]
    return (f"jobs: {jobs}\npods: {[p['metadata']['name'] for p in kc.pods()]}\nevents:\n  " + "\n  ".join(events)
            + "\n" + "\n".join(logs) + f"\n--- operator:\n{operator.tail(25)}")


def finished(kc: Kubectl, name: str) -> dict[str, Any]:
    status = kc.status(name)
    return status if status.get("phase") in ("Succeeded", "Failed") else {}


def delete_and_wait(kc: Kubectl, name: str, why) -> None:
    """Deletion goes through the operator's finalizer, so it needs the operator's RBAC too."""
    kc("delete", "djjob", name, "--wait=false", check=False)
    wait_for(lambda: kc.get("djjob", name) is None, 60, f"djjob {name} (and its finalizer) to go", why)


def test_rbac_table_in_docs_lists_exactly_what_the_chart_grants():
    table = documented_grants(REPO / "docs" / "deploy.md")
    assert all(len(why) > 10 for why in table.values()), "every row names the call that needs the verb"
    namespaced_only = {g for g, why in table.items() if why.startswith("*watchNamespaces only*")}
    ha_cluster = {g for g, why in table.items() if why.startswith("*ha.enabled only*, cluster-wide")}
    ha_namespaced = {g for g, why in table.items() if why.startswith("*ha.enabled only*, watchNamespaces")}
    cluster_wide = set(grants(only(render()["manifests"], "ClusterRole")["rules"]))
    everywhere = set(table) - namespaced_only - ha_cluster - ha_namespaced
    assert cluster_wide == everywhere, f"table vs chart: {cluster_wide ^ everywhere}"
    manifests = render({"watchNamespaces": ["a"]})["manifests"]
    namespaced = {g for m in manifests if m["kind"] in ("ClusterRole", "Role") for g in grants(m["rules"])}
    expected = set(table) - ha_cluster - ha_namespaced
    assert namespaced == expected, f"table vs chart with watchNamespaces: {namespaced ^ expected}"
    ha = set(grants(only(render({"ha": {"enabled": True}})["manifests"], "ClusterRole")["rules"]))
    assert ha == everywhere | ha_cluster, f"table vs chart with ha: {ha ^ (everywhere | ha_cluster)}"
    manifests = render({"ha": {"enabled": True}, "watchNamespaces": ["a"]})["manifests"]
    ha_ns = {g for m in manifests if m["kind"] in ("ClusterRole", "Role") for g in grants(m["rules"])}
    assert ha_ns == expected | ha_namespaced, f"table vs chart with ha and watchNamespaces: {ha_ns ^ (expected | ha_namespaced)}"


def test_a_job_lifecycle_runs_with_only_the_charts_service_account(kc, s3_env, s3_bucket, operator, agent):
    upload_dataset(s3_env, s3_bucket, 200)
    endpoint = s3_env["AWS_ENDPOINT_URL"]
    kc.apply(job_manifest("life", s3_bucket, endpoint, rows_per_partition=50, slow=1.0,
                          cleanup={"ttlSecondsAfterFinished": 3}))
    kc.apply(job_manifest("shape", s3_bucket, endpoint, executorType="ray"))
    why = lambda: diagnose(kc, operator, agent)  # noqa: E731

    cluster = wait_for(lambda: kc.get("raycluster", "shape-ray"), 30, "the ray job's RayCluster", why)
    assert cluster["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True
    assert kc.get("secret", "shape-ray-auth")["metadata"]["ownerReferences"][0]["name"] == "shape"
    wait_for(lambda: (s := kc.status("life")).get("phase") == "Running"
             and 1 <= (s.get("partitions") or {}).get("completed", 0) < (s.get("partitions") or {}).get("total", 0),
             90, "life to be mid-run, its progress in status", why)

    kc.patch_stop("life", True)
    kc.patch_stop("shape", True)
    wait_for(lambda: kc.phase("life") == "Stopped", 60, "life Stopped", why)
    wait_for(lambda: kc.phase("shape") == "Stopped" and kc.get("raycluster", "shape-ray") is None
             and kc.get("secret", "shape-ray-auth") is None, 60, "shape Stopped, its RayCluster and Secret deleted", why)
    assert agent.exits[(kc.namespace, "life-driver-1")] == 130, "the driver checkpointed and exited on SIGTERM"
    assert kc.pods() == []

    kc.patch_stop("life", False)
    done = wait_for(lambda: finished(kc, "life"), 120, "the resumed job to finish", why)
    # attempt 2 resumes; tests/operator proves it needs no other attempt, this proves RBAC
    assert done["phase"] == "Succeeded" and done["attempt"] >= 2, why()
    assert done["partitions"]["completed"] == done["partitions"]["total"] == 4
    rows = read_jsonl(s3_env, f"s3://{s3_bucket}/out/life.jsonl")
    assert rows and not any("https://" in row["text"] for row in rows)
    reasons = {e["reason"] for e in kc.events("life")}
    assert {"StopRequested", "Stopped", "Completed"} <= reasons, "Events are posted with the chart's RBAC"

    # ttlSecondsAfterFinished: the operator deletes the job, its finalizer deletes the children
    wait_for(lambda: kc.get("djjob", "life") is None, 60, "the finished job to be deleted by its TTL", why)
    assert not [cm for cm in kc.get("configmaps") or [] if cm["metadata"]["name"].startswith("life-")]
    pvcs = [pvc for pvc in kc.get("pvc") or [] if pvc["metadata"]["name"].startswith("life-")]
    assert pvcs and all(pvc["metadata"].get("deletionTimestamp") for pvc in pvcs), "deleted (no PVC controller here)"
    delete_and_wait(kc, "shape", why)


# -- necessary: each verb, taken away ------------------------------------------------------

class Rbac:
    """The ServiceAccount's permissions as the apiserver's authorizer decides them, and the
    chart's ClusterRole edited the way Helm wrote it: server-side apply as Helm's own field
    manager, so a later `helm upgrade` still owns every field and meets no conflict."""

    def __init__(self, cluster: LocalCluster, role_name: str) -> None:
        from kubernetes import client
        from kubernetes.dynamic import DynamicClient

        api = cluster.api_client()
        self.authz, self.client, self.role_name = client.AuthorizationV1Api(api), client, role_name
        self.roles = DynamicClient(api).resources.get(api_version="rbac.authorization.k8s.io/v1", kind="ClusterRole")

    def allowed(self, group: str, resource: str, verb: str, namespace: str | None = None) -> bool:
        """A SubjectAccessReview, which is what `kubectl auth can-i --as` asks."""
        c = self.client
        name, _, sub = resource.partition("/")
        review = c.V1SubjectAccessReview(spec=c.V1SubjectAccessReviewSpec(
            user=OPERATOR_SA_USER, groups=list(OPERATOR_SA_GROUPS),
            resource_attributes=c.V1ResourceAttributes(group=group, resource=name, subresource=sub or None,
                                                       verb=verb, namespace=namespace)))
        return bool(self.authz.create_subject_access_review(review).status.allowed)

    def set_rules(self, rules: list[dict[str, Any]]) -> None:
        current = self.roles.get(name=self.role_name).to_dict()
        meta = current["metadata"]
        manager = next(f["manager"] for f in meta["managedFields"] if "f:rules" in f.get("fieldsV1", {}))
        body = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": self.role_name, "labels": meta.get("labels") or {},
                             "annotations": meta.get("annotations") or {}},
                "rules": rules}
        self.roles.server_side_apply(body=body, name=self.role_name, field_manager=manager, force_conflicts=True)


@pytest.fixture
def rbac(release: Release, kube_cluster: LocalCluster) -> Iterator[Rbac]:
    """Edits the chart's ClusterRole in place; the chart's rules are back after the test."""
    rules = release.cluster_role["rules"]
    access = Rbac(kube_cluster, release.cluster_role["metadata"]["name"])
    yield access
    access.set_rules(rules)
    wait_for(lambda: all(access.allowed(*g) for g in grants(rules)), 30, "the chart's rules to be back")


def assert_each_verb_is_needed(access: Rbac, rules: list[dict[str, Any]]) -> None:
    """Removes each verb in turn: the apiserver must then refuse that verb, and only it."""
    every = list(grants(rules))
    assert all(access.allowed(*g) for g in every), "the chart grants each verb to the ServiceAccount"
    for removed in every:
        access.set_rules(without(rules, *removed))
        wait_for(lambda: not access.allowed(*removed), 30, f"{removed} to be refused once removed")
        assert all(access.allowed(*g) for g in every if g != removed), f"removing {removed} took more away"
    access.set_rules(rules)


def test_removing_any_one_verb_denies_exactly_that_verb(release, rbac):
    assert_each_verb_is_needed(rbac, release.cluster_role["rules"])


def kopf_retry_message(kc: Kubectl, name: str) -> str:
    """The error kopf recorded on the job for the failed create handler it will retry (its
    progress annotation, datajuicer.io/reconcile-create), or ''."""
    annotations = kc.job(name).get("metadata", {}).get("annotations") or {}
    record = json.loads(next((v for k, v in annotations.items() if k.endswith("/reconcile-create")), "{}"))
    return record.get("message") or "" if record.get("retries") else ""


@pytest.mark.parametrize("removed, what_is_missing", [
    (("datajuicer.io", "datajuicerjobs/status", "patch"), "status"),
    (("", "pods", "create"), "driver"),
])
def test_without_a_rule_the_operator_cannot_run_a_job(removed, what_is_missing, release, rbac, operator, agent, kc,
                                                     s3_bucket, s3_env):
    group, resource, verb = removed
    rbac.set_rules(without(release.cluster_role["rules"], *removed))
    wait_for(lambda: not rbac.allowed(*removed), 30, f"{removed} refused")
    name = f"no-{resource.replace('/', '-')}-{verb}"
    kc.apply(job_manifest(name, s3_bucket, s3_env["AWS_ENDPOINT_URL"]))
    why = lambda: diagnose(kc, operator, agent)  # noqa: E731

    if what_is_missing == "status":
        message = wait_for(lambda: kopf_retry_message(kc, name), 30, f"kopf to record the failure on {name}", why)
        assert "Forbidden" in message and f"cannot {verb} resource" in message and resource in message, message
        assert "phase" not in kc.status(name) and kc.pods() == [], "nothing starts before the status names it"
    else:  # a refused child create is the job's status, not an endless kopf retry
        status = wait_for(lambda: (s := kc.status(name)).get("reason") == "CreateForbidden" and s, 30,
                          f"CreateForbidden on {name}", why)
        assert f"cannot {verb} resource" in status["message"] and resource in status["message"], status["message"]
        assert status["children"]["driverPod"] == f"{name}-driver-1" and kc.pods() == []
    rbac.set_rules(release.cluster_role["rules"])
    wait_for(lambda: rbac.allowed(*removed), 30, "the rule back")
    delete_and_wait(kc, name, why)


# -- namespaced mode ----------------------------------------------------------------------

def test_watch_namespaces_mode_runs_a_job_with_roles_only(release, kube_cluster, operator, agent, kc, s3_env,
                                                          s3_bucket, tmp_path):
    """Last in this module: it upgrades the release and restarts the operator namespaced."""
    values = {**release.values, "watchNamespaces": [kc.namespace]}
    with helm_config(kube_cluster) as cfg:
        upgraded = cfg.upgrade(str(release.chart), RELEASE, values, timeout=60)
    manifests = parsed(upgraded)
    assert [r["metadata"]["namespace"] for r in manifests if r["kind"] == "Role"] == [kc.namespace]
    access = Rbac(kube_cluster, RELEASE)
    wait_for(lambda: not access.allowed("datajuicer.io", "datajuicerjobs", "list"), 30, "cluster-wide list revoked")
    assert access.allowed("datajuicer.io", "datajuicerjobs", "list", kc.namespace)
    assert not access.allowed("", "pods", "create", "default")
    assert_each_verb_is_needed(access, only(manifests, "ClusterRole")["rules"])

    operator.stop()
    operator.container = operator_container(manifests)
    assert f"--namespace={kc.namespace}" in operator.argv
    operator.start()
    upload_dataset(s3_env, s3_bucket, 60)
    kc.apply(job_manifest("scoped", s3_bucket, s3_env["AWS_ENDPOINT_URL"]))
    why = lambda: diagnose(kc, operator, agent)  # noqa: E731
    # promptly: refused the namespace listing, kopf would retry it for a minute before reconciling
    done = wait_for(lambda: finished(kc, "scoped"), 40, "the job in a watched namespace to finish", why)
    assert done["phase"] == "Succeeded", why()
    delete_and_wait(kc, "scoped", why)


# -- blockOwnerDeletion ---------------------------------------------------------------------

class OwnerReferenceEnforcingCluster(LocalCluster):
    """A cluster with the OwnerReferencesPermissionEnforcement admission plugin (OpenShift
    turns it on): setting blockOwnerDeletion on an owner reference needs `update` on the
    owner's finalizers subresource."""

    def _apiserver_flags(self) -> list[str]:
        return [*super()._apiserver_flags(), "--enable-admission-plugins=OwnerReferencesPermissionEnforcement"]


def test_on_a_clean_cluster_helm_installs_the_crd_and_the_operator_needs_crd_watch_and_finalizers_update(
        kube_cluster, tmp_path):
    """A fresh apiserver with OwnerReferencesPermissionEnforcement (OpenShift turns it on).
    Helm installs the whole chart, CRD included. The CRD is then re-created while the
    operator runs: it notices through its CRD watch and accepts a job, whose children carry
    blockOwnerDeletion; without `update` on datajuicerjobs/finalizers it cannot create them."""
    tokens = {OPERATOR_SA_TOKEN: (OPERATOR_SA_USER, OPERATOR_SA_GROUPS)}
    with OwnerReferenceEnforcingCluster(kube_cluster.binaries, tmp_path, tokens) as strict:
        with helm_config(strict) as cfg:
            installed = cfg.install(str(CHART), RELEASE, loopback_values(free_port()), create_namespace=True,
                                    timeout=60)
        wait_for(lambda: is_established(strict, CRD_NAME), 30, "the CRD Helm installed to be Established")
        strict.kubectl("delete", "crd", CRD_NAME)
        manifests = parsed(installed)
        operator = ChartOperator(operator_container(manifests), strict.kubeconfig_for(OPERATOR_SA_TOKEN),
                                 tmp_path / "dj-operator.log").start()
        try:
            strict.kubectl("apply", "-f", str(CHART / "crds"))
            wait_for(lambda: is_established(strict, CRD_NAME), 30, "the re-created CRD to be Established")
            kc = Kubectl(strict, "default")
            kc.apply(job_manifest("first", "b", "http://x"))
            why = lambda: f"{kc.status('first')}\n{operator.tail()}"  # noqa: E731
            last_poke = [0.0]

            def driver_started() -> bool:
                # kopf re-reads discovery on each CRD event, and the apiserver may publish the new
                # group a moment after the last one; an annotation is one more event to act on.
                if time.monotonic() - last_poke[0] > 2:
                    last_poke[0] = time.monotonic()
                    strict.kubectl("annotate", "crd", CRD_NAME, f"test.datajuicer.io/poke={last_poke[0]}",
                                   "--overwrite")
                return any(p["metadata"]["name"] == "first-driver-1" for p in kc.pods())

            wait_for(driver_started, 60, "the operator to notice the new CRD and start the job's driver", why)

            access = Rbac(strict, RELEASE)
            removed = ("datajuicer.io", "datajuicerjobs/finalizers", "update")
            access.set_rules(without(only(manifests, "ClusterRole")["rules"], *removed))
            wait_for(lambda: not access.allowed(*removed), 30, "finalizers update refused")
            kc.apply(job_manifest("second", "b", "http://x"))
            status = wait_for(lambda: (st := kc.status("second")).get("reason") == "CreateForbidden" and st, 30,
                              "the second job's refused create in its status", why)
            assert "blockOwnerDeletion" in status["message"], status["message"]
            assert [p["metadata"]["name"] for p in kc.pods()] == ["first-driver-1"]
        finally:
            operator.stop()
