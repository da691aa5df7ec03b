#!/usr/bin/env python3
"""One version everywhere: pyproject.toml's.

  release_version.py check [--tag vX.Y.Z] [--owner OWNER]   exit 1 listing every disagreement
  release_version.py stamp X.Y.Z                             write X.Y.Z everywhere it is named
  release_version.py image                                   print the release image (repo:version)

The console scripts and the operator's default job image read the version from the installed
package's metadata, so only files are checked and stamped here: the chart's version and
appVersion, its default image.repository, the example jobs' spec.image, every image tag and
`helm install --version` in README.md, docs/deploy.md, SECURITY.md and scripts/kind-e2e.sh,
and the CHANGELOG's entry. The release workflow runs `check` with the
pushed tag and the GitHub owner before it publishes anything."""
from __future__ import annotations

import argparse
import ast
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SEMVER = re.compile(r"\d+\.\d+\.\d+")  # a PEP 440 and a SemVer 2 version alike (pip and Helm)
CHART = Path("charts/datajuicer-operator")
# Text that names the release image or chart version by hand: stamped and checked as a whole.
TEXT_FILES = ("README.md", "docs/deploy.md", "SECURITY.md", "scripts/kind-e2e.sh")
IMAGE_TAG = re.compile(r"(datajuicer-ft:)(\d+\.\d+\.\d+)")
CHART_VERSION = re.compile(r"(charts/datajuicer-operator\s+--version\s+)(\d+\.\d+\.\d+)")
HELM_INSTALL = re.compile(r"oci://(ghcr\.io/[^/\s]+)/charts/datajuicer-operator\s+--version\s+(\S+)")


def project_version(root: Path) -> str:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]


def image_repository(root: Path) -> str:
    """djworker.version.IMAGE_REPOSITORY, read without importing (the tree may be another checkout)."""
    tree = ast.parse((root / "worker/djworker/version.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "IMAGE_REPOSITORY" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit("worker/djworker/version.py defines no IMAGE_REPOSITORY")


def job_images(root: Path) -> dict[str, str]:
    """{'configs/job.yaml': image} for each example DataJuicerJob that names a spec.image."""
    found = {}
    for path in sorted((root / "configs").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "DataJuicerJob" and "image" in doc.get("spec", {}):
                found[str(path.relative_to(root))] = doc["spec"]["image"]
    return found


def disagreements(root: Path, tag: str | None = None, owner: str | None = None) -> list[str]:
    version, repository = project_version(root), image_repository(root)
    image = f"{repository}:{version}"
    out = []
    if not SEMVER.fullmatch(version):
        out.append(f"pyproject.toml: version {version!r} is not X.Y.Z (Helm needs SemVer, pip PEP 440)")
    if tag is not None and tag != f"v{version}":
        out.append(f"tag {tag!r} does not match pyproject.toml's version {version}: tag v{version}, "
                   f"or run scripts/release_version.py stamp {tag.removeprefix('v')} and commit")
    if owner is not None and repository != f"ghcr.io/{owner.lower()}/datajuicer-ft":
        out.append(f"worker/djworker/version.py: IMAGE_REPOSITORY {repository!r} is not where this "
                   f"repository publishes (ghcr.io/{owner.lower()}/datajuicer-ft); set it, the chart's "
                   "image.repository, configs/ and the README to that")
    chart = yaml.safe_load((root / CHART / "Chart.yaml").read_text())
    for key in ("version", "appVersion"):
        if str(chart.get(key)) != version:
            out.append(f"{CHART}/Chart.yaml: {key} {chart.get(key)!r} != {version}")
    values = yaml.safe_load((root / CHART / "values.yaml").read_text())["image"]
    if values["repository"] != repository:
        out.append(f"{CHART}/values.yaml: image.repository {values['repository']!r} != {repository!r}")
    if values.get("tag"):
        out.append(f"{CHART}/values.yaml: image.tag {values['tag']!r} must be empty (the appVersion is the tag)")
    for path, named in job_images(root).items():
        if named != image:
            out.append(f"{path}: spec.image {named!r} != {image!r}")
    installs = HELM_INSTALL.findall((root / "README.md").read_text())
    if not installs:
        out.append("README.md: no `helm install ... oci://ghcr.io/<owner>/charts/datajuicer-operator --version X`")
    for registry, named in installs:
        if named != version or registry != repository.rsplit("/", 1)[0]:
            out.append(f"README.md: helm install names {registry} --version {named}, "
                       f"want {repository.rsplit('/', 1)[0]} --version {version}")
    for rel in TEXT_FILES:
        if not (root / rel).exists():
            continue
        text = (root / rel).read_text()
        for pattern in (IMAGE_TAG, CHART_VERSION):
            for match in pattern.finditer(text):
                if match.group(2) != version:
                    line = text.count("\n", 0, match.start()) + 1
                    out.append(f"{rel}:{line}: {match.group(0)!r} names {match.group(2)}, not {version}")
    if f"## [{version}]" not in (root / "CHANGELOG.md").read_text():
        out.append(f"CHANGELOG.md: no '## [{version}]' entry")
    return out


def stamp(root: Path, new: str) -> None:
    if not SEMVER.fullmatch(new):
        raise SystemExit(f"version {new!r} is not X.Y.Z")
    old, repository = project_version(root), image_repository(root)

    def sub(rel: str | Path, pattern: str, repl: str, count: int = 0) -> None:
        path = root / rel
        text, n = re.subn(pattern, repl, path.read_text(), count=count, flags=re.M)
        if not n:
            raise SystemExit(f"{rel}: found no {pattern!r} to stamp")
        path.write_text(text)

    sub("pyproject.toml", r'^version = "[^"]*"', f'version = "{new}"', 1)
    sub(CHART / "Chart.yaml", r"^version: .*$", f"version: {new}", 1)
    sub(CHART / "Chart.yaml", r"^appVersion: .*$", f'appVersion: "{new}"', 1)
    for rel in job_images(root):
        sub(rel, re.escape(repository) + r":[\w.\-]+", f"{repository}:{new}")
    for rel in TEXT_FILES:
        if (root / rel).exists():
            text = (root / rel).read_text()
            for pattern in (IMAGE_TAG, CHART_VERSION):
                text = pattern.sub(rf"\g<1>{new}", text)
            (root / rel).write_text(text)
    changelog = (root / "CHANGELOG.md").read_text()
    if f"## [{new}]" in changelog:
        pass
    elif "## [Unreleased]" in changelog:  # what has gathered since the last release becomes this one
        sub("CHANGELOG.md", r"^## \[Unreleased\]", f"## [{new}]", 1)
    else:
        sub("CHANGELOG.md", r"^## \[", f"## [{new}]\n\n(write this release's changes)\n\n## [", 1)
    print(f"stamped {new} (was {old}); reinstall the package (pip install -e .) so --version agrees")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="release_version.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=ROOT, help="the source tree (default: this checkout)")
    sub = p.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check")
    check.add_argument("--tag", help="the pushed git tag, e.g. v0.1.0")
    check.add_argument("--owner", help="the GitHub owner the workflow publishes under")
    sub.add_parser("stamp").add_argument("version")
    sub.add_parser("image")
    args = p.parse_args(argv)
    if args.command == "image":
        print(f"{image_repository(args.root)}:{project_version(args.root)}")
    elif args.command == "stamp":
        stamp(args.root, args.version)
    else:
        problems = disagreements(args.root, args.tag, args.owner)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            return 1
        print(f"{project_version(args.root)}: chart, image, example jobs, README and CHANGELOG agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
