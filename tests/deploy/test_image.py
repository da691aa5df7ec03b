"""What can be checked of the Dockerfile without a Docker engine: the base image's Ray and
Python are the pinned ones, and every command the image, the chart and the operator's pods
run is a console script the project installs."""
from __future__ import annotations

import re
import shlex
import tomllib

import yaml

from djoperator import children
from djoperator.crd import Job, parse_spec
from djoperator.settings import Settings
from .chart import REPO, UID, operator_container, render

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.read_text().splitlines()
                                          if not line.lstrip().startswith("#")))
    return [(word.upper(), rest.strip()) for word, _, rest in
            (line.strip().partition(" ") for line in text.splitlines() if line.strip())]


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pinned_ray() -> str:
    extra = pyproject()["project"]["optional-dependencies"]["ray"]
    pins = [re.fullmatch(r"ray(\[[\w,]+\])?==([\w.]+)", dep) for dep in extra]
    (version,) = [m.group(2) for m in pins if m]
    return version


def spec(executor: str) -> dict:
    return {"executorType": executor,
            "recipe": {"dataset_path": "s3://b/in.jsonl", "process": [{"whitespace_normalization_mapper": {}}]}}


def exec_form(argument: str) -> list[str]:
    return yaml.safe_load(argument) if argument.startswith("[") else shlex.split(argument)


def base_images() -> list[str]:
    """Each FROM's image, with ${ARG}s declared before it replaced by their defaults."""
    args: dict[str, str] = {}
    bases = []
    for word, arg in instructions():
        if word == "ARG" and "=" in arg:
            key, _, value = arg.partition("=")
            args[key.strip()] = value.strip().strip('"')
        elif word == "FROM":
            bases.append(re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], arg))
    return bases


def test_base_image_is_the_official_ray_image_of_the_pinned_ray_and_python():
    bases = base_images()
    assert len(bases) == 1, "one stage: the same image runs operator, driver and Ray nodes"
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py3(\d+)", bases[0])
    assert match, f"FROM {bases[0]}: want rayproject/ray:<ray version>-py3<minor>"
    ray_version, python_minor = match.group(1), int(match.group(2))
    assert ray_version == pinned_ray()
    lock = dict(line.split("==") for line in (REPO / "requirements-lock.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert lock["ray"] == ray_version
    minimum = re.fullmatch(r">=3\.(\d+)", pyproject()["project"]["requires-python"])
    assert minimum and python_minor >= int(minimum.group(1))
    assert Job("x", "ns", UID, parse_spec(spec("ray"))).spec.ray.ray_version == ray_version, \
        "the RayCluster's rayVersion default must be the image's Ray"
    crd = yaml.safe_load((REPO / "crds" / "datajuicer.io_datajuicerjobs.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert schema["properties"]["ray"]["properties"]["rayVersion"]["default"] == ray_version


def test_image_runs_as_the_non_root_user_the_pods_expect():
    users = [arg for word, arg in instructions() if word == "USER"]
    assert users and users[-1].isdigit() and int(users[-1]) != 0, "a numeric uid, so runAsNonRoot can verify it"
    assert int(users[-1]) == children.RUN_AS
    pod = render()["manifests"]
    deployment = next(m for m in pod if m["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == children.RUN_AS


def commands_run() -> dict[str, str]:
    """Every executable named as a command: {name: where it is named}."""
    named: dict[str, str] = {}
    for word, arg in instructions():
        if word in ("CMD", "ENTRYPOINT"):
            named[exec_form(arg)[0]] = f"Dockerfile {word}"
        elif word == "RUN":
            for step in re.split(r"&&|;", arg):
                program = shlex.split(step)[0] if step.strip() else ""
                if program.startswith("dj-"):
                    named[program] = "Dockerfile RUN smoke test"
    named[operator_container(render()["manifests"])["command"][0]] = "chart Deployment"
    job = Job("demo", "ns", UID, parse_spec(spec("default")))
    driver = children.driver_pod(job, 1, Settings())
    named[driver["spec"]["containers"][0]["command"][0]] = "operator's driver pod"
    return named


def test_every_command_the_image_chart_and_pods_run_is_an_installed_console_script():
    scripts = pyproject()["project"]["scripts"]
    named = commands_run()
    assert {"dj-operator", "dj-process"} <= set(named)
    for program, where in named.items():
        assert program in scripts, f"{where} runs {program!r}, which pyproject.toml does not install"
    assert set(scripts) <= set(named), "the build's smoke test should run every console script"


def test_image_installs_the_project_with_the_ray_and_operator_extras_under_the_lock():
    runs = " ".join(arg for word, arg in instructions() if word == "RUN")
    assert re.search(r"pip install .*--constraint requirements-lock\.txt .*\.\[ray,operator\]", runs)
    copied = " ".join(arg for word, arg in instructions() if word == "COPY")
    for needed in ("pyproject.toml", "requirements-lock.txt", "worker/", "operator/djoperator/"):
        assert needed in copied
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", "outputs"} <= set(ignored)
