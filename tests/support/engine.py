"""Helpers for driving dj-process the way a user does: a recipe file and a subprocess."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import orjson
import yaml

from djworker.demo_data import write_jsonl
from tests.support.artifacts import JobFiles, output_rows  # noqa: F401  (output_rows: re-exported)

REPO = Path(__file__).resolve().parents[2]
STANDARD_OPS = [
    {"clean_links_mapper": {}},
    {"clean_email_mapper": {}},
    {"whitespace_normalization_mapper": {}},
    {"fix_unicode_mapper": {}},
    {"text_length_filter": {"min_len": 100, "max_len": 600}},
]


def make_recipe(tmp: Path, rows: int = 600, name: str = "recipe", **overrides: Any) -> Path:
    """A recipe over a fresh demo corpus in tmp; returns the recipe path."""
    data = tmp / "input.jsonl"
    if not data.exists():
        write_jsonl(str(data), rows)
    recipe: dict[str, Any] = {
        "project_name": "test",
        "dataset_path": str(data),
        "export_path": str(tmp / "out" / "result.jsonl"),
        "work_dir": str(tmp / "jobs"),
        "event_log_dir": str(tmp / "events"),
        "checkpoint_dir": str(tmp / "ckpt"),
        "np": 2,
        "partition": {"size": 100},
        "retry": {"max_retries": 2, "base_delay_s": 0.05, "max_delay_s": 0.2},
        "process": STANDARD_OPS,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key] = {**recipe[key], **value}
        else:
            recipe[key] = value
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def env_with(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "DJ_EXTRA_OP_MODULES": "tests.support.test_ops"}
    env.pop("DJ_FAILPOINTS", None)
    env.update(extra or {})
    return env


def dj_process(recipe: Path, job_id: str, *args: str, env: Optional[dict[str, str]] = None,
               timeout: float = 180) -> subprocess.CompletedProcess:
    """Run dj-process in its own session (failpoints SIGKILL the whole process group)."""
    cmd = [sys.executable, "-m", "djworker.cli.process", "--config", str(recipe), "--job_id", job_id, "--quiet", *args]
    return subprocess.run(cmd, env=env_with(env), capture_output=True, text=True, timeout=timeout,
                          start_new_session=True, cwd=recipe.parent)


def start_dj_process(recipe: Path, job_id: str, *args: str, env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "djworker.cli.process", "--config", str(recipe), "--job_id", job_id, "--quiet", *args]
    return subprocess.Popen(cmd, env=env_with(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=recipe.parent)


def wait_exit(proc: subprocess.Popen, timeout: float) -> int:
    """proc's exit code; if it is still running after timeout, fail with every thread's stack."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # dj-process dumps its threads (faulthandler)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"dj-process still running after {timeout} s; its threads:\n{err}") from None


def job_files(tmp: Path, job_id: str) -> JobFiles:
    """The files of a job run from a make_recipe recipe under tmp."""
    return JobFiles.of(job_id, tmp / "jobs", tmp / "events", tmp / "ckpt")


def events(tmp: Path, job_id: str) -> list[dict[str, Any]]:
    """Every event of an ended job; a line that does not parse fails the test."""
    return job_files(tmp, job_id).events()


def events_so_far(tmp: Path, job_id: str) -> list[dict[str, Any]]:
    """The events of a running job: none before its log exists, and not a line it is mid-writing."""
    return job_files(tmp, job_id).events_so_far()


def event_types(evs: list[dict[str, Any]]) -> list[str]:
    return [e["event_type"] for e in evs]


def floor_rows(input_path: Path, recipe_path: Path) -> list[dict[str, Any]]:
    """The floor: the recipe's ops applied in-process to the whole input, no framework,
    with the engine's internal columns dropped as the export drops them."""
    import pyarrow as pa

    import tests.support.test_ops  # noqa: F401  (the recipe may use the test ops)
    from djworker.config import build_ops, load_recipe

    rows = [orjson.loads(line) for line in input_path.read_bytes().splitlines() if line.strip()]
    table = pa.Table.from_pylist(rows)
    for op in build_ops(load_recipe(recipe_path)):
        table = op.process(table)
    return table.drop_columns([c for c in table.column_names if c.startswith("__dj__")]).to_pylist()


def expected_rows(recipe_path: Path) -> list[dict[str, Any]]:
    """floor_rows over the recipe's own (local) dataset."""
    from djworker.config import load_recipe

    return floor_rows(Path(load_recipe(recipe_path).dataset_path), recipe_path)


def summary(tmp: Path, job_id: str) -> dict[str, Any]:
    return job_files(tmp, job_id).summary()
