"""The Helm chart rendered offline by Helm v4 (helm-python-sdk): lint, defaults, non-default
values, the values schema, and the CRD it ships. No cluster needed."""
from __future__ import annotations

import pytest

from djoperator.settings import parse

from .chart import CHART, REPO, grants, objects, only, operator_container, render

NON_DEFAULT = {
    "image": {"repository": "registry.example.com/dj/datajuicer-ft", "tag": "1.2.3", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "fullnameOverride": "dj-op",
    "serviceAccount": {"create": True, "name": "dj-robot", "annotations": {"team": "data"}},
    "watchNamespaces": ["team-a", "team-b"],
    "logLevel": "debug",
    "operator": {"jobImage": "registry.example.com/dj/worker:1.2.3", "interval": 2.5, "progressTimeout": 4,
                 "progressGraceSeconds": 120, "forceDeleteAfterSeconds": 45,
                 "extraArgs": ["--progress-endpoint-annotation=example.com/progress"],
                 "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]},
    "health": {"port": 9090},
    "resources": {"requests": {"cpu": "250m", "memory": "300Mi"}, "limits": {"cpu": 1, "memory": "1Gi"}},
    "podAnnotations": {"a": "b"},
    "podLabels": {"tier": "control"},
    "priorityClassName": "system-cluster-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}]}}},
}


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["defaults", "non-default"])
def test_helm_lint_reports_no_warning_or_error(values):
    import helm_python as helm

    report = helm.lint(str(CHART), values, strict=True, namespace="dj-system")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []  # 1 is info ("icon is recommended")


def test_chart_crd_is_the_top_level_crd():
    """Helm installs charts/*/crds/ verbatim, so it must be byte-equal to crds/, the source."""
    for source in sorted((REPO / "crds").glob("*.yaml")):
        copy = CHART / "crds" / source.name
        assert copy.exists() and copy.read_bytes() == source.read_bytes(), (
            f"{copy.relative_to(REPO)} drifted from {source.relative_to(REPO)}: "
            f"run `cp crds/*.yaml {(CHART / 'crds').relative_to(REPO)}/`")
    assert sorted(p.name for p in (CHART / "crds").glob("*")) == sorted(p.name for p in (REPO / "crds").glob("*.yaml"))


def test_default_deployment_is_one_recreated_non_root_read_only_pod_with_a_liveness_probe():
    manifests = render()["manifests"]
    deploy = only(manifests, "Deployment")
    assert deploy["metadata"]["namespace"] == "dj-system"
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"] == {"type": "Recreate"}
    pod = deploy["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "datajuicer-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    container = operator_container(manifests)
    assert container["image"] == "ghcr.io/datajuicer-ft/datajuicer-ft:0.1.0" and container["command"] == ["dj-operator"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}  # the only writable path

    settings = parse(container["args"], env={})
    probe = container["livenessProbe"]["httpGet"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == probe["port"])
    assert settings.liveness == f"http://0.0.0.0:{port}/healthz" and probe["path"] == "/healthz"
    assert settings.namespaces == () and settings.peering is None and not settings.verbose
    assert settings.image == container["image"]  # one image: drivers and Ray pods run what the operator runs


def test_default_rbac_is_one_cluster_role_bound_to_the_service_account():
    manifests = render()["manifests"]
    assert objects(manifests, "Role") == [] and objects(manifests, "RoleBinding") == []
    role, binding = only(manifests, "ClusterRole"), only(manifests, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "datajuicer-operator",
                                    "namespace": "dj-system"}]
    account = only(manifests, "ServiceAccount")["metadata"]
    assert (account["name"], account["namespace"]) == ("datajuicer-operator", "dj-system")
    granted = set(grants(role["rules"]))
    assert ("datajuicer.io", "datajuicerjobs/status", "patch") in granted
    assert not any(verb in ("update", "*") and resource == "datajuicerjobs" for _, resource, verb in granted)
    assert not any(resource == "namespaces" for _, resource, _ in granted)
    # it makes and removes the Ray auth Secrets of its jobs, and can read no Secret at all
    assert {verb for _, resource, verb in granted if resource == "secrets"} == {"create", "delete"}


def test_non_default_values_reach_the_deployment():
    manifests = render(NON_DEFAULT, name="my-release", namespace="ops")["manifests"]
    deploy = only(manifests, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    container = operator_container(manifests)
    assert deploy["metadata"]["name"] == "dj-op" and deploy["metadata"]["namespace"] == "ops"
    assert container["image"] == "registry.example.com/dj/datajuicer-ft:1.2.3"
    assert container["imagePullPolicy"] == "Always" and pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["serviceAccountName"] == "dj-robot"
    assert only(manifests, "ServiceAccount")["metadata"]["annotations"] == {"team": "data"}
    assert pod["nodeSelector"] == NON_DEFAULT["nodeSelector"] and pod["tolerations"] == NON_DEFAULT["tolerations"]
    assert pod["affinity"] == NON_DEFAULT["affinity"] and pod["priorityClassName"] == "system-cluster-critical"
    assert deploy["spec"]["template"]["metadata"]["annotations"] == {"a": "b"}
    assert deploy["spec"]["template"]["metadata"]["labels"]["tier"] == "control"
    assert container["resources"] == NON_DEFAULT["resources"]
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container["env"]
    assert container["ports"][0]["containerPort"] == 9090

    settings = parse(container["args"], env={})
    assert settings.namespaces == ("team-a", "team-b") and settings.verbose
    assert settings.liveness == "http://0.0.0.0:9090/healthz"
    assert settings.image == "registry.example.com/dj/worker:1.2.3"
    assert (settings.interval, settings.progress_timeout) == (2.5, 4)
    assert (settings.progress_grace_seconds, settings.force_delete_after_seconds) == (120, 45)
    assert settings.progress_endpoint_annotation == "example.com/progress"


def test_watch_namespaces_get_a_role_each_and_the_cluster_role_keeps_only_crd_watching():
    manifests = render(NON_DEFAULT, name="my-release", namespace="ops")["manifests"]
    cluster_role = only(manifests, "ClusterRole")
    assert set(grants(cluster_role["rules"])) == {("apiextensions.k8s.io", "customresourcedefinitions", "list"),
                                                 ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
                                                 ("", "namespaces", "list"), ("", "namespaces", "watch")}
    roles, bindings = objects(manifests, "Role"), objects(manifests, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "dj-robot", "namespace": "ops"}]
        assert binding["roleRef"]["kind"] == "Role"
    cluster_wide = set(grants(only(render()["manifests"], "ClusterRole")["rules"]))
    for role in roles:  # the same namespaced rules as the cluster-wide mode, nothing more
        assert set(grants(role["rules"])) == {g for g in cluster_wide if g[1] != "customresourcedefinitions"}


def test_rbac_and_service_account_can_be_left_to_the_cluster_admin():
    manifests = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "preexisting"}})
    kinds = {m["kind"] for m in manifests["manifests"]}
    assert kinds == {"Deployment", "Service"}  # the Service is the operator's metrics
    assert only(manifests["manifests"], "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "preexisting"


@pytest.mark.parametrize("values, complaint", [
    ({"logLevel": "loud"}, "/logLevel"),
    ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    ({"watchNamespaces": ["a", "a"]}, "/watchNamespaces"),
    ({"watchNamespaces": "team-a"}, "/watchNamespaces"),
    ({"image": {"repository": "", "pullPolicy": "IfNotPresent"}}, "/image/repository"),
    ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"imagePullSecrets": ["regcred"]}, "/imagePullSecrets/0"),
    ({"rbac": {"create": "yes"}}, "/rbac/create"),
    ({"serviceAccount": {"create": True, "nmae": "x"}}, "nmae"),
    ({"operator": {"interval": 0}}, "/operator/interval"),
    ({"health": {"port": 80}}, "/health/port"),
    ({"metrics": {"enabled": "yes"}}, "/metrics/enabled"),
    ({"metrics": {"port": 80}}, "/metrics/port"),
    ({"ha": {"enabled": True, "replicas": 1}}, "/ha/replicas"),
    ({"resources": {"requests": {"cpu": "lots"}}}, "/resources/requests/cpu"),
    ({"replicaCount": 2}, "replicaCount"),
    ({"nodeSelector": {"disk": True}}, "/nodeSelector/disk"),
])
def test_schema_rejects_bad_values(values, complaint):
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name="x", namespace="y")
    assert complaint in str(caught.value)


def test_notes_show_how_to_submit_watch_stop_and_resume_a_job():
    notes = render()["notes"]
    assert "kubectl apply -f configs/job.yaml" in notes
    assert "kubectl get djjobs -w" in notes
    assert '\'{"spec":{"stop":true}}\'' in notes and '\'{"spec":{"stop":false}}\'' in notes
    assert "kubectl apply --server-side --force-conflicts -f charts/datajuicer-operator/crds/" in notes
    assert "namespaces team-a, team-b" in render({"watchNamespaces": ["team-a", "team-b"]})["notes"]


def test_probes_and_metrics_reach_the_operator_and_its_service():
    manifests = render()["manifests"]
    container = operator_container(manifests)
    settings = parse(container["args"], env={})
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe = container["readinessProbe"]["httpGet"]
    assert settings.readiness == f"http://0.0.0.0:{ports[probe['port']]}/readyz" and probe["path"] == "/readyz"
    assert settings.metrics_port == ports["metrics"] == 9090
    service = only(manifests, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    pod_labels = only(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert objects(manifests, "ServiceMonitor") == [] and objects(manifests, "PodMonitor") == []
    assert parse(operator_container(render({"metrics": {"enabled": False}})["manifests"])["args"],
                 env={}).metrics_port == 0


def test_monitors_scrape_the_operator_and_every_driver():
    manifests = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                                    "podMonitor": {"enabled": True}}})["manifests"]
    monitor = only(manifests, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics" and monitor["metadata"]["labels"]["release"] == "prom"
    pods = only(manifests, "PodMonitor")["spec"]
    assert pods["podMetricsEndpoints"][0] == {"port": "dashboard", "path": "/metrics", "interval": "30s"}
    assert pods["selector"]["matchLabels"]["datajuicer.io/component"] == "driver" and pods["namespaceSelector"] == {
        "any": True}


def test_ha_runs_replicas_with_peering_and_grants_exactly_the_peering_rbac():
    manifests = render({"ha": {"enabled": True}})["manifests"]
    deploy = only(manifests, "Deployment")
    assert deploy["spec"]["replicas"] == 2 and "strategy" not in deploy["spec"]
    settings = parse(operator_container(manifests)["args"], env={})
    assert settings.peering == "datajuicer-operator" and settings.priority is None  # random per replica
    assert only(manifests, "ClusterKopfPeering")["metadata"]["name"] == "datajuicer-operator"
    granted = set(grants(only(manifests, "ClusterRole")["rules"]))
    assert {g for g in granted if g[0] == "kopf.dev"} == {("kopf.dev", "clusterkopfpeerings", v)
                                                        for v in ("list", "watch", "patch")}
    namespaced = render({"ha": {"enabled": True}, "watchNamespaces": ["a", "b"]})["manifests"]
    assert sorted(p["metadata"]["namespace"] for p in objects(namespaced, "KopfPeering")) == ["a", "b"]
    for role in objects(namespaced, "Role"):
        assert ("kopf.dev", "kopfpeerings", "patch") in set(grants(role["rules"]))
    assert not [g for g in grants(only(render()["manifests"], "ClusterRole")["rules"]) if g[0] == "kopf.dev"]
