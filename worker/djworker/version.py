"""The release identity: one version, pyproject.toml's, read from the installed
distribution's metadata, and the published image that carries it.            [pure]

`scripts/release_version.py check` fails when the chart, the example jobs or the README
name another version or registry; the release workflow runs it on every tag."""
from __future__ import annotations

import argparse
from importlib import metadata

DISTRIBUTION = "datajuicer-ft"
# Where the release workflow publishes (ghcr.io/<GitHub owner>/datajuicer-ft); the chart's
# image.repository and configs/job.yaml name the same image.
IMAGE_REPOSITORY = "ghcr.io/datajuicer-ft/datajuicer-ft"


def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
        return "0.0.0"


def release_image() -> str:
    """The image a job runs when it names none: this release's published image."""
    return f"{IMAGE_REPOSITORY}:{version()}"


def add_version_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    return parser
