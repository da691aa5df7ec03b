"""Chaos-proven exactly-once: a job SIGKILLed at random moments (driver, worker, mid-checkpoint-write,
mid-export, ...) and resumed until it completes gives an uninterrupted run's output, byte for byte
after sorting by id; its event log accounts for every partition once; no process outlives it.

The harness is tests/support/chaos.py (`bench/chaos.py --kills 50` is the long run); here it runs a
handful of kills.
The seed is random per run and printed with the tally, so a failure can be replayed."""
from __future__ import annotations

import os
import random
import signal
import subprocess

import pytest

import tests.reliability.fault_ops  # noqa: F401  (registers the fault ops here too)
from djworker.executors.ray import ray_available
from tests.support.chaos import chaos
from tests.support.engine import make_recipe, output_rows, start_dj_process
from tests.support.engine import expected_rows


def test_random_sigkills_lose_nothing_duplicate_nothing_and_leave_no_process(tmp_path):
    seed = random.randrange(1 << 30)
    first = ("worker", "driver", "checkpoint_mid_write", "export_mid_write")  # the named kinds, then random ones
    tally = chaos(tmp_path, kills=6, partitions=80, rows_per_partition=10, seed=seed, first=first, log=lambda _: None)
    report = tally.render()
    assert tally.total_kills >= 6, report
    assert {"driver", "worker", "checkpoint_mid_write", "export_mid_write"} <= set(tally.kills), report
    assert (tally.lost, tally.duplicated, tally.mismatched) == (0, 0, 0), report
    assert tally.problems == [] and tally.orphans == {}, report


@pytest.mark.ray
@pytest.mark.skipif(ray_available() is not None, reason=str(ray_available()))
def test_random_sigkills_on_the_ray_executor_lose_nothing_and_leave_no_ray_behind(tmp_path):
    seed = random.randrange(1 << 30)
    tally = chaos(tmp_path, kills=2, executor="ray", partitions=40, rows_per_partition=10, seed=seed,
                  first=("worker", "driver"), log=lambda _: None)
    report = tally.render()
    assert tally.total_kills >= 2 and tally.ok, report


def test_a_worker_killed_while_sending_an_event_does_not_hang_the_job(tmp_path):
    """The window is small but real (an OOM kill mid-write): the dead worker holds the event queue's
    cross-process lock, so every later event, and every partition's end marker, would wait forever."""
    ops = [{"clean_links_mapper": {}}, {"die_holding_event_lock_mapper": {"state_dir": str(tmp_path / "state")}}]
    recipe = make_recipe(tmp_path, rows=400, process=ops)
    proc = start_dj_process(recipe, "lock", env={"DJ_EXTRA_OP_MODULES": "tests.support.test_ops,tests.reliability.fault_ops"})
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its whole session: driver and pool
            proc.wait()
    assert proc.returncode == 0, "the job hung (killed after 20s)"
    assert output_rows(tmp_path / "out" / "result.jsonl") == expected_rows(recipe)
