"""The project's Dockerfile, built FROM the locally made Ray base (scripts/local-images.sh)
with both of Docker's builders, from the unpacked sdist (what a user building the release
has), and what the image then holds and runs. The job tests run that same image."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import DOCKER, IMAGE, REPO, Kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


def base_tag(cluster: Kubectl) -> str:
    """The CI base's tag (built now if its inputs changed since the last build)."""
    done = subprocess.run(["bash", str(REPO / "scripts" / "local-images.sh"), "base"], capture_output=True,
                          text=True, timeout=1800, env={**os.environ, "DOCKER_HOST": cluster.env["DOCKER_HOST"]})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()[-1]


def images_script(cluster: Kubectl, *args: str) -> str:
    done = subprocess.run(["bash", str(REPO / "scripts" / "local-images.sh"), *args], capture_output=True, text=True,
                          timeout=1800, env={**os.environ, "DOCKER_HOST": cluster.env["DOCKER_HOST"]})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def build(cluster: Kubectl, tag: str, buildkit: bool) -> subprocess.CompletedProcess[str]:
    """BuildKit: local-images.sh's own build of IMAGE (from the unpacked sdist); the legacy
    builder: the same unpacked sdist, built by hand as docs/deploy.md shows."""
    if buildkit:
        images_script(cluster, "project")
        return subprocess.CompletedProcess([], 0, "", "")
    tree = Path(images_script(cluster, "sdist").split()[-1])
    try:
        env = {**os.environ, "DOCKER_HOST": cluster.env["DOCKER_HOST"], "DOCKER_BUILDKIT": "0"}
        return subprocess.run([DOCKER, "build", "--build-arg", f"BASE_IMAGE={base_tag(cluster)}", "-t", tag,
                               str(tree)], env=env, capture_output=True, text=True, timeout=1200)
    finally:
        shutil.rmtree(tree.parent, ignore_errors=True)


def run(cluster: Kubectl, image: str, *command: str) -> str:
    return cluster.docker("run", "--rm", image, *command).stdout


@pytest.mark.parametrize("buildkit", [True, False], ids=["buildkit", "legacy-builder"])
def test_dockerfile_builds_and_the_image_runs_every_command_as_uid_1000(cluster: Kubectl, buildkit: bool):
    tag = IMAGE if buildkit else "datajuicer-ft:legacy-builder-check"
    done = build(cluster, tag, buildkit)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    try:
        if buildkit:  # the image every job test runs
            label = cluster.docker("image", "inspect", "-f", '{{ index .Config.Labels "datajuicer.io/build-context" }}',
                                   IMAGE).stdout.strip()
            assert label.startswith("sdist:datajuicer"), f"{IMAGE} was not built from the unpacked sdist: {label!r}"
        assert run(cluster, tag, "id", "-u").strip() == "1000"
        for command in ("dj-process --list-ops", "dj-monitor --help", "dj-stop --help", "dj-operator --help"):
            run(cluster, tag, *command.split())
        versions = run(cluster, tag, "python", "-c", "import sys, ray; print(sys.version_info[:2], ray.__version__)")
        assert versions.strip() == "(3, 11) 2.60.0"
    finally:
        if not buildkit:
            cluster.docker("rmi", "-f", tag)


def test_image_is_lean(cluster: Kubectl):
    """No compilers, no package manager caches, no CA bundle left from the build."""
    leftovers = run(cluster, IMAGE, "sh", "-c",
                    "command -v gcc cc make g++ 2>/dev/null; ls -A ~/.cache 2>/dev/null; "
                    "find /var/lib/apt/lists /var/cache/apt/archives -type f ! -name lock 2>/dev/null; "
                    "ls /run/secrets 2>/dev/null; true")
    assert leftovers.strip() == "", leftovers
