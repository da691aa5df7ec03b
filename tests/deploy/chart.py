"""The Helm chart as tests see it: rendered by helm-python-sdk (Helm v4, no helm binary)
into parsed manifests, and the RBAC rules those manifests grant."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

from tests.support.k8s import LocalCluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "datajuicer-operator"
RELEASE, NAMESPACE = "datajuicer-operator", "dj-system"  # the identity tests/support/k8s.py has a token for
CRD_NAME = "datajuicerjobs.datajuicer.io"
UID = "0123abcd-0000-4000-8000-000000000000"  # a job's uid where the builders need one


def render(values: Optional[dict[str, Any]] = None, *, name: str = RELEASE,
           namespace: str = NAMESPACE) -> dict[str, Any]:
    """{"manifests": [objects...], "notes": str}: what `helm template` prints, parsed."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values or {}, name=name, namespace=namespace, is_install=True)
    notes = next((text for path, text in rendered.items() if path.endswith("NOTES.txt")), "")
    manifests = [doc for path, text in sorted(rendered.items()) if not path.endswith(".txt")
                 for doc in yaml.safe_load_all(text) if doc]
    return {"manifests": manifests, "notes": notes}


def objects(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def only(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = objects(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, got {[m['metadata']['name'] for m in found]}"
    return found[0]


def operator_container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def grants(rules: list[dict[str, Any]]) -> Iterator[tuple[str, str, str]]:
    """Each (apiGroup, resource, verb) a list of RBAC rules grants, one by one."""
    for rule in rules:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                    yield group, resource, verb


def without(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> list[dict[str, Any]]:
    """The rules with one verb taken out of the rule that grants it (a rule left with no
    verbs goes); no other rule may grant it too, or the removal would prove nothing."""
    out = []
    for rule in rules:
        if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
            assert rule["apiGroups"] == [group] and rule["resources"] == [resource], f"split {rule} first"
            rule = {**rule, "verbs": [v for v in rule["verbs"] if v != verb]}
            if not rule["verbs"]:
                continue
        out.append(rule)
    return out


def documented_grants(doc: Path) -> dict[tuple[str, str, str], str]:
    """The RBAC table of docs/deploy.md: (apiGroup, resource, verb) -> the call that needs it.

    Rows look like | `datajuicer.io` | `datajuicerjobs` | `patch` | why |, the core group
    written as `""`; one verb per row, so a removed rule has exactly one row to delete."""
    table: dict[tuple[str, str, str], str] = {}
    for line in doc.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not all(c.startswith("`") for c in cells[:3]):
            continue
        group, resource, verb = (c.strip("`") for c in cells[:3])
        key = ("" if group == '""' else group, resource, verb)
        assert key not in table, f"{key} documented twice"
        table[key] = cells[3]
    return table


def is_established(cluster: LocalCluster, name: str) -> bool:
    """Polled as JSON: v1.20's `kubectl wait` fails on a CRD with no conditions yet."""
    done = cluster.kubectl("get", "crd", name, "-o", "json", check=False)
    if done.returncode != 0:
        return False
    conditions = json.loads(done.stdout).get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
