"""The one-node cluster itself (scripts/local-cluster.sh): what the job tests rely on,
checked directly, through kubectl as a user would."""
from __future__ import annotations

import subprocess
import uuid

import pytest
import yaml

from tests.support.wait import wait_for

from .conftest import SCRIPT, Kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def pids() -> list[str]:
    return subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True, check=True).stdout.splitlines()


def test_up_again_is_a_no_op_that_keeps_every_process(cluster: Kubectl):
    before = pids()
    assert all("running (pid" in line for line in before), before
    subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, check=True, timeout=300)
    assert pids() == before


def test_pod_resolves_services_reaches_the_api_and_answers_logs_and_exec(cluster: Kubectl):
    """DNS from the Services, the `kubernetes` Service through kube-proxy with the pod's own
    ServiceAccount token, and the kubelet's logs and exec endpoints (the node is reached by
    its InternalIP, whatever its name resolves to)."""
    ns = f"dj-e2e-{uuid.uuid4().hex[:8]}"
    cluster("create", "namespace", ns)
    kc = Kubectl(cluster.env, ns)
    try:
        wait_for(lambda: kc("get", "serviceaccount", "default", check=False).returncode == 0, 60, "the default SA",
                 every=1)
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "probe-svc"},
                   "spec": {"selector": {"app": "none"}, "ports": [{"port": 80}]}}
        kc("apply", "-f", "-", input=yaml.safe_dump(service))
        probe = "\n".join([
            "import json, os, ssl, urllib.error, urllib.request as u",
            "sa = '/var/run/secrets/kubernetes.io/serviceaccount/'",
            "r = u.Request('https://kubernetes.default.svc/api/v1/namespaces/' + os.environ['NS'] + '/services',",
            "              headers={'Authorization': 'Bearer ' + open(sa + 'token').read()})",
            "try:",
            "    print(u.urlopen(r, context=ssl.create_default_context(cafile=sa + 'ca.crt')).status)",
            "except urllib.error.HTTPError as e:",
            "    print(e.code, json.loads(e.read())['message'])",
        ])
        script = 'getent hosts probe-svc.$NS.svc.cluster.local; python3 -c "$PROBE" 2>&1 | tail -n 1; sleep 3600'
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
               "spec": {"securityContext": {"runAsUser": 1000, "runAsNonRoot": True},
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "c", "image": "dj-local/debian:bookworm", "imagePullPolicy": "Never",
                                        "env": [{"name": "NS", "value": ns}, {"name": "PROBE", "value": probe}], "command": ["sh", "-c", script]}]}}
        kc("apply", "-f", "-", input=yaml.safe_dump(pod))
        cluster_ip = kc.json("get", "service", "probe-svc")["spec"]["clusterIP"]
        logs = wait_for(lambda: (out := kc("logs", "probe", check=False).stdout).count("\n") >= 2 and out, 120,
                        "the probe's output", lambda: kc("describe", "pod", "probe", check=False).stdout[-2000:],
                        every=1)
        first, second = logs.splitlines()[:2]
        assert first.split()[0] == cluster_ip and first.split()[1] == f"probe-svc.{ns}.svc.cluster.local"
        # the apiserver knew the pod's own ServiceAccount token (and RBAC grants it nothing)
        assert second.startswith("403 ") and f"system:serviceaccount:{ns}:default" in second, logs
        assert kc("exec", "probe", "--", "id", "-u").stdout.strip() == "1000"
    finally:
        cluster("delete", "namespace", ns, "--wait=false", check=False)
