"""Losing the Ray head mid-job: the driver, connected through Ray Client as the operator's
driver pod is, notices within a bounded wait and exits with ClusterLost (exit 7, retryable)
and a message that says what to do; a resume on a new cluster is exactly-once. A head that
stops answering for a few seconds, or whose connection is cut for a few seconds, and comes
back costs the job nothing.

Each test starts its own head (`ray start --head`, killed by pid, never `ray stop`)."""
from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from djworker.errors import ClusterLost
from djworker.executors.ray import CLUSTER_GRACE_S
from tests.support.engine import (dj_process, event_types, events, events_so_far, floor_rows, make_recipe,
                                  output_rows, start_dj_process, wait_exit)
from tests.support.ray import alive, running_ray_head, wait_gone
from tests.support.tcp_proxy import TCPProxy
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(600)

OPS = [{"clean_links_mapper": {}}, {"slow_mapper": {"seconds": 1.0}}, {"text_length_filter": {"min_len": 100}}]
# After the kill: the grace, Ray Client's bounded disconnect (10 s), the event drain (10 s), and slack for a busy machine.
EXIT_BOUND_S = CLUSTER_GRACE_S + 45


def auth() -> dict[str, str]:
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}


def driver_env(head, token_env: dict[str, str]) -> dict[str, str]:
    return {**token_env, "RAY_ADDRESS": head.address}  # the address from the env: the recipe is the same on resume


def completed(evs: list[dict]) -> set[int]:
    return {e["partition_id"] for e in evs if e["event_type"] == "PARTITION_COMPLETE"}


def recipe_for(tmp_path: Path) -> Path:
    return make_recipe(tmp_path, rows=1200, process=OPS, executor_type="ray", checkpoint={"strategy": "every_op"})


def test_a_killed_head_ends_the_job_with_cluster_lost_and_a_new_cluster_resumes_it_exactly_once(tmp_path):
    recipe = recipe_for(tmp_path)
    first_auth = auth()
    with running_ray_head(first_auth) as head:
        proc = start_dj_process(recipe, "hl", env=driver_env(head, first_auth))
        wait_for(lambda: len(completed(events_so_far(tmp_path, "hl"))) >= 2, 180, "two completed partitions",
                 every=0.1, process=proc)
        killed = head.kill()
        t_kill = time.time()
        code = wait_exit(proc, EXIT_BOUND_S)
        took = time.time() - t_kill
        stderr = proc.communicate()[1]
        assert not wait_gone(killed, 30), "the head's processes outlived SIGKILL"
    assert code == ClusterLost.exit_code == 7, stderr[-3000:]
    assert took < EXIT_BOUND_S
    assert "lost the Ray cluster" in stderr and "resume this job with the same job id" in stderr, stderr[-3000:]
    lost = events(tmp_path, "hl")
    assert event_types(lost)[-1] == "JOB_FAILED"
    assert "lost the Ray cluster" in lost[-1]["message"] or "lost the Ray cluster" in str(lost[-1].get("error"))
    done_before = completed(lost)
    assert 2 <= len(done_before) < 12  # the kill landed mid-job

    second_auth = auth()
    with running_ray_head(second_auth) as fresh:
        resumed = dj_process(recipe, "hl", env=driver_env(fresh, second_auth), timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert fresh.proc.poll() is None
    after = events(tmp_path, "hl")[len(lost):]
    assert {e["partition_id"] for e in after if e["event_type"] == "PARTITION_SKIPPED"} == done_before
    assert not {e["partition_id"] for e in after if e["event_type"] == "OP_START"} & done_before
    assert completed(after) | done_before == set(range(12))
    # Exactly once: every input row's output appears once, as a clean run in one go gives it.
    assert output_rows(tmp_path / "out" / "result.jsonl") == floor_rows(tmp_path / "input.jsonl", recipe)


def test_a_head_that_stops_answering_for_a_few_seconds_costs_the_job_nothing(tmp_path):
    recipe = recipe_for(tmp_path)
    token = auth()
    with running_ray_head(token) as head:
        proc = start_dj_process(recipe, "bl", env=driver_env(head, token))
        wait_for(lambda: len(completed(events_so_far(tmp_path, "bl"))) >= 2, 180, "two completed partitions",
                 every=0.1, process=proc)
        head.pause(8)
        code = wait_exit(proc, 300)
        stderr = proc.communicate()[1]
        assert alive([head.proc.pid])
    assert code == 0, stderr[-3000:]
    evs = events(tmp_path, "bl")
    assert "JOB_FAILED" not in event_types(evs) and completed(evs) == set(range(12))
    assert output_rows(tmp_path / "out" / "result.jsonl") == floor_rows(tmp_path / "input.jsonl", recipe)


def test_a_connection_to_the_head_cut_for_a_few_seconds_is_reconnected_and_costs_the_job_nothing(tmp_path):
    recipe = recipe_for(tmp_path)
    token = auth()
    with running_ray_head(token) as head:
        proxy = TCPProxy(int(head.address.rsplit(":", 1)[1]))
        try:
            proc = start_dj_process(recipe, "cut", env={**token, "RAY_ADDRESS": f"ray://127.0.0.1:{proxy.port}"})
            wait_for(lambda: len(completed(events_so_far(tmp_path, "cut"))) >= 2, 180, "two completed partitions",
                     every=0.1, process=proc)
            proxy.cut(5)
            code = wait_exit(proc, 300)
            stderr = proc.communicate()[1]
        finally:
            proxy.close()
    assert proxy.refused >= 1  # the driver did try to come back while the line was down
    assert code == 0, stderr[-3000:]
    evs = events(tmp_path, "cut")
    assert "JOB_FAILED" not in event_types(evs) and completed(evs) == set(range(12))
    assert output_rows(tmp_path / "out" / "result.jsonl") == floor_rows(tmp_path / "input.jsonl", recipe)
