"""What the release workflow publishes, built and checked here without pushing: one version
everywhere, the sdist and wheel (twine-checked, installable, carrying their data), the
packaged chart (linted, rendering this release's image), and the workflow's own shape."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from djoperator.settings import Settings, parse
from djworker.version import DISTRIBUTION, IMAGE_REPOSITORY, release_image

from .chart import CHART, REPO, operator_container
from .test_image import instructions

SCRIPT = REPO / "scripts" / "release_version.py"
WORKFLOW = REPO / ".github" / "workflows" / "release.yml"
COMMANDS = ("dj-process", "dj-monitor", "dj-stop", "dj-operator")


def project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def release_version(*args: str, root: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=60)


# --- one version -------------------------------------------------------------------------

def test_every_command_the_operator_default_and_the_files_carry_pyprojects_version():
    version = project_version()
    assert metadata.version(DISTRIBUTION) == version, "reinstall the package: pip install -e ."
    bin_dir = Path(sys.executable).parent
    for command in COMMANDS:
        done = subprocess.run([str(bin_dir / command), "--version"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [command, version]
    assert Settings().image == parse([], env={}).image == f"{IMAGE_REPOSITORY}:{version}" == release_image()
    done = release_version("check")
    assert done.returncode == 0, done.stderr
    assert release_version("image").stdout.strip() == release_image()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The files release_version.py reads and stamps, copied so they can be broken."""
    for rel in ("pyproject.toml", "README.md", "CHANGELOG.md", "worker/djworker/version.py", "docs/deploy.md",
                "charts/datajuicer-operator/Chart.yaml", "charts/datajuicer-operator/values.yaml", "configs"):
        src, dst = REPO / rel, tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return tmp_path


def test_check_names_each_disagreement_and_stamp_brings_every_file_to_one_version(tree: Path):
    chart = tree / "charts/datajuicer-operator/Chart.yaml"
    chart.write_text(chart.read_text().replace('appVersion: "0.1.0"', 'appVersion: "0.0.9"'))
    job = tree / "configs/job.yaml"
    job.write_text(job.read_text().replace(f"{IMAGE_REPOSITORY}:", "datajuicer-ft:"))
    deploy = tree / "docs/deploy.md"
    deploy.write_text(deploy.read_text().replace("--version 0.1.0", "--version 0.0.9", 1))
    done = release_version("check", "--tag", "v9.9.9", "--owner", "SomeoneElse", root=tree)
    assert done.returncode == 1
    problems = done.stderr.splitlines()
    assert any(p.startswith("tag 'v9.9.9' does not match") for p in problems)
    assert any("ghcr.io/someoneelse/datajuicer-ft" in p for p in problems), "GHCR names are lower-case"
    assert any(p.startswith("charts/datajuicer-operator/Chart.yaml: appVersion '0.0.9'") for p in problems)
    assert any(p.startswith("configs/job.yaml: spec.image 'datajuicer-ft:") for p in problems)
    assert any(p.startswith("docs/deploy.md:") and "names 0.0.9" in p for p in problems)
    assert len(problems) == 5, problems

    job.write_text((REPO / "configs/job.yaml").read_text())
    log = tree / "CHANGELOG.md"
    if "## [Unreleased]" not in log.read_text():
        log.write_text(log.read_text().replace("## [", "## [Unreleased]\n\n- a change since 0.1.0\n\n## [", 1))
    unreleased = log.read_text().split("## [Unreleased]\n", 1)[1].split("## [", 1)[0]
    assert release_version("stamp", "0.2.0", root=tree).returncode == 0
    done = release_version("check", "--tag", "v0.2.0", "--owner", "datajuicer-ft", root=tree)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(chart.read_text())["version"] == "0.2.0"
    spec = next(d for d in yaml.safe_load_all(job.read_text()) if d and d["kind"] == "DataJuicerJob")["spec"]
    assert spec["image"] == f"{IMAGE_REPOSITORY}:0.2.0"
    readme = (tree / "README.md").read_text()
    assert "--version 0.2.0" in readme and "0.1.0" not in readme
    assert "datajuicer-ft:0.1.0" not in (tree / "docs/deploy.md").read_text()
    changelog = log.read_text()  # what gathered under Unreleased became 0.2.0's entry
    assert "## [Unreleased]" not in changelog and f"## [0.2.0]\n{unreleased}## [0.1.0]" in changelog
    assert release_version("stamp", "2.0", root=tree).returncode != 0, "Helm needs X.Y.Z"


# --- the workflow ------------------------------------------------------------------------

PINNED = re.compile(r"[\w.-]+/[\w.-]+(/[\w./-]+)?@([0-9a-f]{40}|v\d+\.\d+\.\d+)")


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_release_workflow_runs_on_version_tags_with_pinned_actions_and_least_privilege():
    flow = workflow()
    triggers = flow[True]  # YAML 1.1 reads the key `on` as true
    assert set(triggers) == {"push"} and triggers["push"] == {"tags": ["v*"]}
    assert flow["permissions"] == {}, "nothing by default; each job asks for its own"
    assert "${{ github.ref }}" in flow["concurrency"]["group"] and flow["concurrency"]["cancel-in-progress"] is False
    jobs = flow["jobs"]
    for name, job in jobs.items():
        assert isinstance(job.get("permissions"), dict) and job["permissions"], f"job {name}: no permissions"
        for step in job["steps"]:
            if "uses" in step:
                assert PINNED.fullmatch(step["uses"]), f"job {name}: {step['uses']} is not pinned to a SHA or an exact tag"
    for line in WORKFLOW.read_text().splitlines():
        sha = re.search(r"uses: \S+@[0-9a-f]{40}(.*)", line)
        if sha:
            assert re.fullmatch(r"\s+# v\d+\.\d+\.\d+", sha.group(1)), f"say which release a SHA is: {line.strip()}"
    writes = {name: {k for k, v in job["permissions"].items() if v == "write"} for name, job in jobs.items()}
    assert writes == {"verify": set(), "dist": set(), "image": {"packages"}, "chart": {"packages"},
                      "pypi": {"id-token"}, "github": {"contents"}}


def step_using(job: dict, action: str) -> dict:
    (step,) = [s for s in job["steps"] if s.get("uses", "").startswith(action + "@")]
    return step


def test_release_workflow_publishes_the_image_chart_and_wheel_under_one_version():
    jobs = workflow()["jobs"]
    verify = "\n".join(s.get("run", "") for s in jobs["verify"]["steps"])
    assert 'release_version.py check --tag "$GITHUB_REF_NAME" --owner "$GITHUB_REPOSITORY_OWNER"' in verify
    assert "${GITHUB_REPOSITORY_OWNER,,}" in verify, "GHCR repository names must be lower-case"
    for name in ("dist", "image", "chart"):
        assert jobs[name]["needs"] == "verify"

    image = jobs["image"]
    assert image["env"]["IMAGE"] == "ghcr.io/${{ needs.verify.outputs.owner }}/datajuicer-ft"
    assert IMAGE_REPOSITORY == "ghcr.io/datajuicer-ft/datajuicer-ft", "the defaults name the owner's image"
    build = step_using(image, "docker/build-push-action")["with"]
    assert build["platforms"] == "linux/amd64,linux/arm64" and build["push"] is True
    assert build["tags"].splitlines() == ["${{ env.IMAGE }}:${{ env.VERSION }}", "${{ env.IMAGE }}:latest"]
    assert build["sbom"] is True and build["provenance"] == "mode=max"
    assert step_using(image, "docker/login-action")["with"]["registry"] == "ghcr.io"

    chart = "\n".join(s.get("run", "") for s in jobs["chart"]["steps"])
    assert 'helm package charts/datajuicer-operator --version "$VERSION" --app-version "$VERSION"' in chart
    assert 'helm push "chart-dist/datajuicer-operator-$VERSION.tgz" "oci://ghcr.io/$OWNER/charts"' in chart

    pypi = jobs["pypi"]
    assert set(pypi["needs"]) == {"dist", "image", "chart"}, "PyPI last: a version cannot be re-uploaded"
    publish = step_using(pypi, "pypa/gh-action-pypi-publish")
    assert not publish.get("with", {}).get("password"), "trusted publishing: no token"
    assert pypi["environment"]["name"] == "pypi"

    release = "\n".join(s.get("run", "") for s in jobs["github"]["steps"])
    assert "gh release create" in release and "datajuicer-operator-$VERSION.tgz" in release and "*.whl" in release


# --- the sdist and wheel -----------------------------------------------------------------

@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The release's `python -m build`, without isolation so it runs offline here."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--skip-dependency-check",
                           "--outdir", str(out), str(REPO)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


def test_sdist_and_wheel_pass_twine_check_and_carry_the_version(dist):
    done = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(dist["sdist"]), str(dist["wheel"])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    version = project_version()
    assert dist["wheel"].name == f"datajuicer_ft-{version}-py3-none-any.whl"
    assert dist["sdist"].name == f"datajuicer_ft-{version}.tar.gz"


def test_wheel_carries_the_package_data_and_every_console_script(dist):
    names = set(zipfile.ZipFile(dist["wheel"]).namelist())
    for asset in (REPO / "worker/djworker/ops/assets").iterdir():
        assert f"djworker/ops/assets/{asset.name}" in names
    assert "djworker/data/demo.jsonl" in names
    entry_points = zipfile.ZipFile(dist["wheel"]).read(
        f"datajuicer_ft-{project_version()}.dist-info/entry_points.txt").decode()
    for command in COMMANDS:
        assert re.search(rf"^{command} = ", entry_points, re.M), command
    metadata = zipfile.ZipFile(dist["wheel"]).read(f"datajuicer_ft-{project_version()}.dist-info/METADATA").decode()
    assert re.search(r"^License: Apache-2.0$", metadata, re.M), "the wheel states its licence"
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)


def test_the_unpacked_sdist_is_a_build_context_for_the_dockerfile(dist, tmp_path: Path):
    with tarfile.open(dist["sdist"]) as archive:
        archive.extractall(tmp_path, filter="data")
    (root,) = tmp_path.iterdir()
    assert (root / "Dockerfile").read_text() == (REPO / "Dockerfile").read_text()
    for word, arg in instructions():
        if word == "COPY":
            sources = [a for a in arg.split() if not a.startswith("--")][:-1]
            for source in sources:
                assert (root / source).exists(), f"Dockerfile COPYs {source}, which the sdist lacks"
    assert (root / "worker/djworker/ops/assets/char_sets.json").exists()


def test_wheel_installs_into_a_fresh_venv_and_its_commands_run(dist, tmp_path: Path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # The dependencies come from this environment's site-packages (offline, fast); the
    # project itself only from the wheel, installed without deps.
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    shared = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (purelib / "_project_deps.pth").write_text("\n".join(shared) + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                           "--no-index", "--quiet", str(dist["wheel"])], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    version = project_version()
    done = subprocess.run([str(venv / "bin" / "dj-process"), "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["dj-process", version], done.stderr
    where = subprocess.run([str(python), "-c", "import djworker.ops, djworker.version as v; "
                            "print(djworker.ops.__file__); print(v.release_image())"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    module, image = where.stdout.split()
    assert Path(module).is_relative_to(purelib), f"djworker imported from {module}, not the wheel"
    assert image == f"{IMAGE_REPOSITORY}:{version}"
    ops = subprocess.run([str(venv / "bin" / "dj-process"), "--list-ops"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert ops.returncode == 0 and "text_length_filter" in ops.stdout, ops.stderr


# --- the chart ---------------------------------------------------------------------------

def test_packaged_chart_lints_and_renders_this_releases_image(tmp_path: Path):
    import helm_python as helm

    version = project_version()
    archive = Path(helm.package(str(CHART), destination=str(tmp_path), version=version, app_version=version))
    assert archive.name == f"datajuicer-operator-{version}.tgz"
    report = helm.lint(str(archive), strict=True)
    assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2], report
    with helm.Chart.load(str(archive)) as chart:
        assert chart.version == version
        rendered = chart.render({}, name="datajuicer-operator", namespace="dj-system", is_install=True)
    manifests = [doc for path, text in sorted(rendered.items()) if not path.endswith(".txt")
                 for doc in yaml.safe_load_all(text) if doc]
    container = operator_container(manifests)
    assert container["image"] == release_image() == f"{IMAGE_REPOSITORY}:{version}"
    assert f"--image={release_image()}" in container["args"], "jobs without spec.image run the same image"
