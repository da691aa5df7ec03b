"""The soak harness (tests/support/soak.py) on a small job: each available fault kind injected at
least once mid-run, on a Ray cluster of process groups with checkpoints and the export on S3
behind the fault-injecting proxy, the event log on a tmpfs; the job resumed after each fault
until it completes, and its output equal to a clean run's (0 lost, 0 duplicated, 0 changed).

`bench/chaos.py --faults ...` is the long run. The seed is random per run and printed with the tally."""
from __future__ import annotations

import random

import pytest

from djworker.executors.ray import ray_available
from tests.support.soak import FAULTS, check_faults, head_loss_exit_code, soak

pytestmark = pytest.mark.s3
AVAILABLE = tuple(f for f in FAULTS if f != "ray-head" or head_loss_exit_code() is not None)


def assert_clean(tally, faults) -> None:
    report = tally.render()
    assert {f for f, n in tally.faults.items() if n.injected} == set(faults), report
    assert tally.total_faults >= len(faults), report
    assert (tally.lost, tally.duplicated, tally.mismatched) == (0, 0, 0), report
    assert tally.problems == [] and tally.orphans == {} and tally.late_events == 0, report


@pytest.mark.ray
@pytest.mark.skipif(ray_available() is not None, reason=str(ray_available()))
def test_one_fault_of_each_kind_on_a_ray_cluster_with_s3_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("tests.support.soak.OUTAGE_S", (3.0, 8.0))  # CI time: a short outage, ridden out or not
    seed = random.randrange(1 << 30)
    faults = AVAILABLE
    # each kind first, in a seeded order, then random ones: the budget is one per kind
    tally = soak(tmp_path, len(faults), faults, executor="ray", partitions=12, rows_per_partition=25, np=2,
                 seed=seed, workers=1, log=print, first=True)
    print(tally.render())
    assert_clean(tally, faults)
    s3 = tally.faults["s3"]
    assert tally.proxy["requests"] > 0 and sum(s3.how.values()) == s3.injected
    if any(h.startswith("outage, exit") for h in s3.how):  # the storage exit code, and a resume follows
        assert set(s3.exits) & {5, 6} and s3.resumes >= 1, tally.render()
    assert tally.faults["enospc"].resumes >= 1  # a degraded log is written in full by a resume


def test_unknown_faults_are_refused_naming_the_choices():
    with pytest.raises(ValueError, match="unknown faults \\['disk'\\]; choose from kill, s3, ray-node"):
        check_faults(("kill", "disk"))
