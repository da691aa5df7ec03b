"""Every example in configs/ is valid where it will be used: each manifest is accepted by the
apiserver (the CRD's schema, server-side dry-run into a fresh namespace), and each recipe by
the engine's loader, the way the driver pod will load it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from djoperator import children
from djoperator.crd import KIND, Job, parse_spec
from djoperator.settings import Settings
from djworker.cli.process import parser as dj_process_parser
from djworker.config import load_recipe, parse_overrides
from .chart import REPO, UID

CONFIGS = REPO / "configs"


def yaml_files() -> list[Path]:
    return sorted(p for p in CONFIGS.rglob("*") if p.suffix in (".yaml", ".yml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def is_manifest(doc: dict[str, Any]) -> bool:
    return "apiVersion" in doc and "kind" in doc


def manifest_files() -> list[Path]:
    return [p for p in yaml_files() if any(is_manifest(d) for d in documents(p))]


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def config_maps() -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data") or {} for p in manifest_files() for d in documents(p)
            if d["kind"] == "ConfigMap"}


def recipes() -> Iterator[Any]:
    """(id, recipe dict, the job that runs it or None): recipe files, inline job recipes, and
    ConfigMap recipes (through the job that references them, else on their own)."""
    referenced = set()
    maps = config_maps()
    for path in yaml_files():
        for doc in documents(path):
            if not is_manifest(doc):
                yield pytest.param(doc, None, id=rel(path))
            elif doc["kind"] == KIND:
                spec, name = doc["spec"], doc["metadata"]["name"]
                if "recipeConfigMap" in spec:
                    ref = spec["recipeConfigMap"]
                    key = ref.get("key", "recipe.yaml")
                    referenced.add((ref["name"], key))
                    assert ref["name"] in maps and key in maps[ref["name"]], \
                        f"{rel(path)}: job {name} uses ConfigMap {ref['name']} key {key}, which no example defines"
                    recipe = yaml.safe_load(maps[ref["name"]][key])
                else:
                    recipe = spec["recipe"]
                yield pytest.param(recipe, doc, id=f"{rel(path)}:{name}")
    for cm_name, data in maps.items():
        for key, text in data.items():
            if (cm_name, key) not in referenced and key.endswith((".yaml", ".yml")):
                yield pytest.param(yaml.safe_load(text), None, id=f"configmap {cm_name}/{key}")


def test_configs_has_the_documented_examples():
    names = {rel(p) for p in manifest_files()}
    assert "configs/job.yaml" in names
    assert any(not is_manifest(d) for p in yaml_files() for d in documents(p)), "a plain recipe for dj-process"


@pytest.mark.k8s
@pytest.mark.parametrize("path", manifest_files(), ids=rel)
def test_manifest_is_accepted_by_the_apiserver(path, kube_cluster, kube_namespace, chart_crd):
    hardcoded = {d["metadata"].get("namespace") for d in documents(path) if is_manifest(d)} - {None}
    assert not hardcoded, f"{rel(path)} pins namespace {hardcoded}: examples go wherever `-n` says"
    done = kube_cluster.kubectl("apply", "--dry-run=server", "-n", kube_namespace, "-f", str(path), check=False)
    assert done.returncode == 0, done.stderr
    kinds = [d["kind"] for d in documents(path) if is_manifest(d)]
    assert done.stdout.count("(server dry run)") == len(kinds), done.stdout


@pytest.mark.parametrize("recipe, job", list(recipes()))
def test_recipe_is_valid_for_the_engine(recipe, job):
    if job is None:
        load_recipe(None, raw=recipe)
        return
    # Exactly what the driver pod does: dj-process with the operator's flags over the mounted recipe.
    parsed = Job(job["metadata"]["name"], "ns", UID, parse_spec(job["spec"]))
    argv = children.driver_args(parsed, Settings())
    args, overrides = dj_process_parser().parse_known_args(argv)
    assert args.config == f"{children.RECIPE_MOUNT}/{children.RECIPE_FILE}"
    loaded = load_recipe(None, parse_overrides(overrides), raw=recipe)
    assert loaded.dataset_path and loaded.export_path, "an example job must say where its data comes from and goes"
