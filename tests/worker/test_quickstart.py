"""The quick start of DataJuicer's fault-tolerance guide as its readers type it:
configs/demo/checkpoint_config_example.yaml through dj-process from the repo root, and
demos/partition_and_checkpoint/run_comprehensive_demo.py.

The guide's /tmp/fast_event_logs, /tmp/large_checkpoints and ./outputs paths are moved into
tmp_path with dotted overrides, so runs neither litter /tmp nor collide."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from djworker.config import Strategy, load_recipe, parse_overrides
from djworker.jobs.common import job_ids
from tests.support.artifacts import JobFiles
from tests.support.engine import REPO, STANDARD_OPS, env_with

CONFIG = Path("configs/demo/checkpoint_config_example.yaml")  # relative: the guide runs from the repo root
DEMO = REPO / "demos" / "partition_and_checkpoint" / "run_comprehensive_demo.py"
DJ_PROCESS = Path(sys.executable).with_name("dj-process")

# The guide's "Basic Configuration" (executor_type and job_id aside: see the config's comments).
REFERENCE = {
    "checkpoint": {"enabled": True, "strategy": "every_op", "n_ops": 2,
                   "op_names": ["clean_links_mapper", "whitespace_normalization_mapper"]},
    "event_logging": {"enabled": True, "max_log_size_mb": 100, "backup_count": 5},
    "event_log_dir": "/tmp/fast_event_logs",
    "checkpoint_dir": "/tmp/large_checkpoints",
    "partition": {"size": 200, "max_size_mb": 32, "max_retries": 3, "retry_backoff": "exponential"},
    "intermediate_storage": {"format": "parquet", "compression": "snappy", "use_arrow_batches": True,
                             "arrow_batch_size": 500, "arrow_memory_mapping": False,
                             "preserve_intermediate_data": True, "cleanup_temp_files": True,
                             "cleanup_on_success": False, "retention_policy": "keep_all", "max_retention_days": 7},
}


def path_flags(tmp: Path) -> list[str]:
    return ["--work_dir", str(tmp / "work"), "--export_path", str(tmp / "work" / "exports" / "out.jsonl"),
            "--event_log_dir", str(tmp / "fast_event_logs"), "--checkpoint_dir", str(tmp / "large_checkpoints")]


def quickstart(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """`dj-process --config configs/demo/checkpoint_config_example.yaml ARGS` from the repo root."""
    cli = [str(DJ_PROCESS)] if DJ_PROCESS.exists() else [sys.executable, "-m", "djworker.cli.process"]
    done = subprocess.run([*cli, "--config", str(CONFIG), *args, "--quiet", *path_flags(tmp)], cwd=REPO,
                          env=env_with(), capture_output=True, text=True, timeout=300, start_new_session=True)
    assert done.returncode == 0, done.stderr
    return done


def job(tmp: Path, job_id: str) -> JobFiles:
    """The job's files where path_flags put them."""
    return JobFiles.of(job_id, tmp / "work", tmp / "fast_event_logs", tmp / "large_checkpoints")


def job_summary(tmp: Path, job_id: str) -> dict:
    return job(tmp, job_id).summary()


def job_events(tmp: Path, job_id: str) -> list[dict]:
    return job(tmp, job_id).events()


def checkpointed_ops(tmp: Path, job_id: str) -> dict[int, set[int]]:
    """partition -> the op counts it has a checkpoint manifest after."""
    return job(tmp, job_id).checkpointed_ops()


# ---- (a) the config as the recipe loader sees it
def test_example_config_keeps_the_guides_keys_and_values():
    raw = yaml.safe_load((REPO / CONFIG).read_text())
    for key, value in REFERENCE.items():
        assert raw[key] == value, key
    assert raw["process"] == STANDARD_OPS
    assert raw["work_dir"] == "./outputs/demo-checkpoint-strategies"
    assert raw["export_path"].startswith(raw["work_dir"] + "/")


def test_example_config_resolves_with_the_recipe_loader(tmp_path):
    recipe = load_recipe(REPO / CONFIG, parse_overrides(path_flags(tmp_path)))
    assert recipe.checkpoint.effective == Strategy.every_op
    assert recipe.checkpoint.n_ops == 2
    assert recipe.checkpoint.op_names == ["clean_links_mapper", "whitespace_normalization_mapper"]
    assert (recipe.event_log_dir, recipe.checkpoint_dir) == (str(tmp_path / "fast_event_logs"),
                                                             str(tmp_path / "large_checkpoints"))
    assert (recipe.partition_rows, recipe.partition_max_mb, recipe.retries, recipe.backoff) == (200, 32, 3, "exponential")
    assert (recipe.intermediate_format, recipe.preserve_intermediate, recipe.arrow_batch_rows) == ("parquet", True, 500)
    assert not recipe.is_ray, "runs out of the box without a Ray cluster"
    assert (REPO / recipe.dataset_path).is_file()


def test_example_config_without_overrides_keeps_the_guides_storage_paths():
    recipe = load_recipe(REPO / CONFIG)  # loading writes nothing
    assert (recipe.event_log_dir, recipe.checkpoint_dir) == ("/tmp/fast_event_logs", "/tmp/large_checkpoints")


@pytest.mark.parametrize("flags, strategy, n_ops, op_names", [
    (["--checkpoint.strategy", "every_partition"], Strategy.every_partition, 2, None),
    (["--checkpoint.strategy", "every_n_ops", "--checkpoint.n_ops", "3"], Strategy.every_n_ops, 3, None),
    (["--checkpoint.strategy", "manual", "--checkpoint.op_names", "clean_links_mapper,whitespace_normalization_mapper"],
     Strategy.manual, 2, ["clean_links_mapper", "whitespace_normalization_mapper"]),
])
def test_quick_start_strategy_flags_resolve(flags, strategy, n_ops, op_names):
    recipe = load_recipe(REPO / CONFIG, parse_overrides(flags))
    assert (recipe.checkpoint.effective, recipe.checkpoint.n_ops) == (strategy, n_ops)
    if op_names:
        assert recipe.checkpoint.op_names == op_names


# ---- (b) the quick-start command lines, for real
def test_run_with_auto_generated_job_id_puts_files_where_the_guide_says(tmp_path):
    quickstart(tmp_path)
    [job_dir] = [p for p in (tmp_path / "work").iterdir() if p.name != "exports"]
    job_id = job_dir.name
    assert re.fullmatch(r"\d{8}_\d{6}_checkpoint_config_example_[0-9a-f]{6}", job_id)
    summary = job_summary(tmp_path, job_id)
    assert summary["status"] == "completed" and summary["num_partitions"] == 10
    assert summary["event_log_file"] == str(tmp_path / "fast_event_logs" / job_id / "event_logs" / "events.jsonl")
    assert job_events(tmp_path, job_id)[-1]["event_type"] == "JOB_COMPLETE"
    assert checkpointed_ops(tmp_path, job_id) == {p: {1, 2, 3, 4, 5} for p in range(10)}  # every_op
    assert (job_dir / "intermediate" / "partition_000000").is_dir()  # preserve_intermediate_data: true


def test_resume_with_the_same_job_id_skips_every_partition(tmp_path):
    quickstart(tmp_path, "--job_id", "my_experiment_001")
    first = (tmp_path / "work" / "exports" / "out.jsonl").read_bytes()
    ran = len(job_events(tmp_path, "my_experiment_001"))
    quickstart(tmp_path, "--job_id", "my_experiment_001")
    resumed = job_events(tmp_path, "my_experiment_001")[ran:]
    types = [e["event_type"] for e in resumed]
    assert types[0] == "JOB_RESUMED" and types[-1] == "JOB_COMPLETE"
    assert sorted(e["partition_id"] for e in resumed if e["event_type"] == "PARTITION_SKIPPED") == list(range(10))
    assert "PARTITION_START" not in types and "OP_START" not in types
    assert (tmp_path / "work" / "exports" / "out.jsonl").read_bytes() == first and first
    assert job_summary(tmp_path, "my_experiment_001")["attempts"] == 2


@pytest.mark.parametrize("job_id, flags, after", [
    ("partition_test", ["--checkpoint.strategy", "every_partition"], {5}),
    ("n_ops_test", ["--checkpoint.strategy", "every_n_ops", "--checkpoint.n_ops", "3"], {3}),
    ("manual_test", ["--checkpoint.strategy", "manual",
                     "--checkpoint.op_names", "clean_links_mapper,whitespace_normalization_mapper"], {1, 3}),
])
def test_strategy_variant_writes_the_checkpoints_it_names(tmp_path, job_id, flags, after):
    quickstart(tmp_path, "--job_id", job_id, *flags)
    assert checkpointed_ops(tmp_path, job_id) == {p: after for p in range(10)}
    saves = [e for e in job_events(tmp_path, job_id) if e["event_type"] == "CHECKPOINT_SAVE"]
    assert len(saves) == 10 * len(after)
    assert job_summary(tmp_path, job_id)["checkpoint_strategy"] == flags[1]


# ---- (c) the comprehensive demo is a smoke test
def test_comprehensive_demo_passes_every_check(tmp_path):
    done = subprocess.run([sys.executable, str(DEMO), "--work-dir", str(tmp_path / "demo")], cwd=tmp_path,
                          env=env_with(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for word in ("every_op", "every_partition", "every_n_ops", "manual", "disabled",
                 "JOB_RESUMED", "PARTITION_SKIPPED", "CHECKPOINT_LOAD"):
        assert word in done.stdout, word
    assert len(list(job_ids(str(tmp_path / "demo" / "jobs")))) == 6  # 5 strategies + the killed job
