"""Fixtures over tests.worker.jobs.jobfiles: fake job directories and a bystander process."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable, Iterator

import psutil
import pytest

from tests.worker.jobs.jobfiles import FakeJob


@pytest.fixture
def fake_job(tmp_path: Path) -> Callable[..., FakeJob]:
    def make(job_id: str = "job1") -> FakeJob:
        return FakeJob(tmp_path / "work", job_id, tmp_path / "elsewhere" / "events")
    return make


@pytest.fixture
def bystander() -> Iterator[psutil.Process]:
    """An unrelated process that must survive whatever a test stops."""
    proc = subprocess.Popen(["sleep", "120"])
    yield psutil.Process(proc.pid)
    proc.kill()
    proc.wait()
