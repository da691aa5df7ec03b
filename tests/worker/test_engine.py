"""dj-process end to end on real files: strategies, resume after kills, stops, failures."""
from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import orjson
import pytest

import tests.support.test_ops  # noqa: F401  (registers the test ops here too)
from djworker.config import load_recipe
from djworker.engine import run_job
from djworker.jobs.liveness import MARKER_ENV
from tests.support.engine import (dj_process, expected_rows, event_types, events, events_so_far, job_files, make_recipe,
                                  output_rows, start_dj_process, summary, wait_exit)
from tests.support.wait import wait_for


def run_ok(recipe: Path, job: str, *args: str, env=None):
    proc = dj_process(recipe, job, *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc


def out_path(tmp: Path) -> Path:
    return tmp / "out" / "result.jsonl"


def test_clean_run_output_layout_and_event_sequence(tmp_path):
    recipe = make_recipe(tmp_path)
    run_ok(recipe, "job1")
    assert output_rows(out_path(tmp_path)) == expected_rows(recipe)
    evs = events(tmp_path, "job1")
    types = event_types(evs)
    assert types[:3] == ["JOB_START", "PROCESSING_START", "PROCESSING_COMPLETE"] and types[-1] == "JOB_COMPLETE"
    assert types.count("PARTITION_START") == types.count("PARTITION_COMPLETE") == 6
    assert types.count("OP_COMPLETE") == 30 and types.count("CHECKPOINT_SAVE") == 30
    for e in evs:
        assert e["schema_version"] == 1 and e["job_id"] == "job1" and e["pid"] and e["host"]
    op_done = [e for e in evs if e["event_type"] == "OP_COMPLETE"]
    assert all(e["rows_in"] >= e["rows_out"] and e["duration_s"] >= 0 and e["op_name"] for e in op_done)
    job = job_files(tmp_path, "job1")
    for path in [job.paths.summary, job.paths.mapping, job.paths.final_report,
                 os.path.join(job.paths.partitions, "partition_000005.parquet")]:
        assert os.path.exists(path), path
    s = job.summary()
    assert s["status"] == "completed" and s["total_samples"] == 600 and "--job_id job1" in s["resumption_command"]
    report = job.report()
    assert sum(p["output_samples"] for p in report["partitions"]) == len(output_rows(out_path(tmp_path)))
    assert job.event_prose().count("PARTITION_COMPLETE") == 6
    manifest = json.loads(Path(str(out_path(tmp_path)) + ".manifest.json").read_text())
    assert manifest["rows"] == len(output_rows(out_path(tmp_path)))


@pytest.mark.parametrize("strategy, extra, per_partition", [
    ("every_op", {}, [1, 2, 3, 4, 5]),
    ("every_partition", {}, [5]),
    ("every_n_ops", {"n_ops": 2}, [2, 4]),
    ("manual", {"op_names": ["clean_email_mapper", "fix_unicode_mapper"]}, [2, 4]),
    ("disabled", {}, []),
])
def test_each_strategy_writes_exactly_its_checkpoints(tmp_path, strategy, extra, per_partition):
    recipe = make_recipe(tmp_path, rows=300, checkpoint={"strategy": strategy, **extra})
    run_ok(recipe, "s")
    assert job_files(tmp_path, "s").checkpointed_ops() == {pid: set(per_partition) for pid in range(3) if per_partition}
    saves = [e for e in events(tmp_path, "s") if e["event_type"] == "CHECKPOINT_SAVE"]
    assert sorted((e["partition_id"], e["op_idx"] + 1) for e in saves) == sorted(
        (pid, n) for pid in range(3) for n in per_partition)
    assert output_rows(out_path(tmp_path)) == expected_rows(recipe)


@pytest.mark.parametrize("failpoint", ["op_done=7", "checkpoint_mid_write=4", "partition_done=2", "export_mid_write=2"])
def test_resume_after_sigkill_gives_identical_output(tmp_path, failpoint):
    recipe = make_recipe(tmp_path, checkpoint={"strategy": "every_n_ops", "n_ops": 2})
    killed = dj_process(recipe, "k", env={"DJ_FAILPOINTS": failpoint})
    assert killed.returncode == -signal.SIGKILL
    assert not out_path(tmp_path).exists()  # no half-written result is ever visible
    run_ok(recipe, "k")
    assert output_rows(out_path(tmp_path)) == expected_rows(recipe)
    types = event_types(events(tmp_path, "k"))
    assert "JOB_RESUMED" in types and types[-1] == "JOB_COMPLETE"


def test_resume_skips_done_partitions_and_continues_from_checkpoints(tmp_path):
    recipe = make_recipe(tmp_path, checkpoint={"strategy": "every_op"})
    assert dj_process(recipe, "r", env={"DJ_FAILPOINTS": "op_done=12"}).returncode == -signal.SIGKILL
    run_ok(recipe, "r")
    evs = events(tmp_path, "r")
    resumed_at = event_types(evs).index("JOB_RESUMED")
    after = evs[resumed_at:]
    skipped = {e["partition_id"] for e in after if e["event_type"] == "PARTITION_SKIPPED"}
    loads = [e for e in after if e["event_type"] == "CHECKPOINT_LOAD"]
    assert loads, "an interrupted partition continues from its checkpoint"
    started_ops = [e for e in after if e["event_type"] == "OP_START"]
    # exactly once: after resume, no op of a skipped partition runs and no reused op runs again
    assert not {e["partition_id"] for e in started_ops} & skipped
    for load in loads:
        assert all(e["op_idx"] >= load["reused_ops"] for e in started_ops if e["partition_id"] == load["partition_id"])
    assert output_rows(out_path(tmp_path)) == expected_rows(recipe)


def test_changed_op_parameter_reuses_only_the_unchanged_prefix(tmp_path):
    recipe = make_recipe(tmp_path, rows=300)
    run_ok(recipe, "p")
    changed = make_recipe(tmp_path, rows=300, name="changed", process=[
        {"clean_links_mapper": {}}, {"clean_email_mapper": {}}, {"whitespace_normalization_mapper": {}},
        {"fix_unicode_mapper": {}}, {"text_length_filter": {"min_len": 50, "max_len": 600}}])
    run_ok(changed, "p")
    after = events(tmp_path, "p")[event_types(events(tmp_path, "p")).index("JOB_RESUMED"):]
    loads = [e for e in after if e["event_type"] == "CHECKPOINT_LOAD"]
    assert sorted(e["partition_id"] for e in loads) == [0, 1, 2] and {e["reused_ops"] for e in loads} == {4}
    assert {e["op_name"] for e in after if e["event_type"] == "OP_START"} == {"text_length_filter"}
    assert output_rows(out_path(tmp_path)) == expected_rows(changed)


def test_torn_checkpoint_is_recomputed_not_loaded(tmp_path):
    recipe = make_recipe(tmp_path, rows=200, checkpoint={"strategy": "every_op"})
    assert dj_process(recipe, "t", env={"DJ_FAILPOINTS": "partition_done=1"}).returncode == -signal.SIGKILL
    job = job_files(tmp_path, "t")
    ckpts = [Path(m["data_path"]) for m in job.checkpoints() if m["upto"] in (4, 5)]
    assert ckpts
    for c in ckpts:
        c.write_bytes(c.read_bytes()[: len(c.read_bytes()) // 2])
    shutil.rmtree(job.paths.results)  # force the partitions to go back to their checkpoints
    run_ok(recipe, "t")
    evs = events(tmp_path, "t")
    invalid = [e for e in evs if e["event_type"] == "CHECKPOINT_INVALID"]
    assert invalid and all("hash" in e["error"] for e in invalid)
    torn = {e["partition_id"] for e in invalid}
    assert all(e["reused_ops"] <= 3 for e in evs if e["event_type"] == "CHECKPOINT_LOAD" and e["partition_id"] in torn)
    assert output_rows(out_path(tmp_path)) == expected_rows(recipe)


def test_second_concurrent_run_is_refused_and_stale_lock_taken_over(tmp_path):
    recipe = make_recipe(tmp_path, rows=200, process=[{"slow_mapper": {"seconds": 0.5}}])
    first = start_dj_process(recipe, "c")
    try:
        wait_for(lambda: os.path.exists(job_files(tmp_path, "c").paths.lock), 30, "the job's lock", every=0.05)
        second = dj_process(recipe, "c")
        assert second.returncode == 4
        assert "job c is running" in second.stderr and "dj-stop c" in second.stderr
    finally:
        first.kill()
        first.wait()
    # the holder is dead now: its lock is stale and the next run takes it over
    os.killpg(first.pid, signal.SIGKILL) if _group_alive(first.pid) else None
    run_ok(recipe, "c")
    assert len(output_rows(out_path(tmp_path))) == 200


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_sigterm_stops_cleanly_then_resume_is_identical(tmp_path):
    ops = [{"clean_links_mapper": {}}, {"slow_mapper": {"seconds": 0.3}}, {"text_length_filter": {"min_len": 100}}]
    recipe = make_recipe(tmp_path, rows=800, process=ops, checkpoint={"strategy": "disabled"})
    proc = start_dj_process(recipe, "st")
    wait_for(lambda: "PARTITION_COMPLETE" in event_types(events_so_far(tmp_path, "st")), 60, "a completed partition",
             every=0.05)
    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc, 60) == 130
    evs = events(tmp_path, "st")
    assert event_types(evs)[-1] == "JOB_STOPPED"
    # the in-flight partitions flushed a checkpoint even with checkpoints disabled
    assert any(e["event_type"] == "CHECKPOINT_SAVE" and e.get("message") == "stop requested" for e in evs)
    s = summary(tmp_path, "st")
    assert s["status"] == "stopped" and s["exit_code"] == 130
    assert not out_path(tmp_path).exists()
    run_ok(recipe, "st")
    assert output_rows(out_path(tmp_path)) == expected_rows(recipe)


def test_retry_then_success_and_permanent_failure_keeps_other_partitions(tmp_path):
    state = tmp_path / "flaky"
    ops = [{"flaky_mapper": {"state_dir": str(state), "failures": 1, "first_ids": [100]}}, {"clean_links_mapper": {}}]
    recipe = make_recipe(tmp_path, rows=300, process=ops)
    run_ok(recipe, "f1")
    evs = events(tmp_path, "f1")
    failed = [e for e in evs if e["event_type"] == "PARTITION_FAILED"]
    assert [(e["partition_id"], e["retry_count"], e["final"]) for e in failed] == [(1, 0, False)]
    assert "injected failure" in failed[0]["error"] and failed[0]["stack_trace"]
    assert [e["retry_count"] for e in evs if e["event_type"] == "PARTITION_COMPLETE" and e["partition_id"] == 1] == [1]

    poison = tmp_path / "poison"
    poison.touch()
    ops = [{"flaky_mapper": {"state_dir": str(tmp_path / "f2"), "poison_file": str(poison), "first_ids": [100]}},
           {"clean_links_mapper": {}}]
    recipe2 = make_recipe(tmp_path, rows=300, name="r2", process=ops, export_path=str(tmp_path / "out2.jsonl"))
    proc = dj_process(recipe2, "f2")
    assert proc.returncode == 6 and "partition 1" in proc.stderr
    evs = events(tmp_path, "f2")
    assert event_types(evs)[-1] == "JOB_FAILED"
    assert [e["retry_count"] for e in evs if e["event_type"] == "PARTITION_FAILED"] == [0, 1, 2]
    assert summary(tmp_path, "f2")["status"] == "failed"
    report = job_files(tmp_path, "f2").report()
    assert [p["status"] for p in report["partitions"]] == ["completed", "failed", "completed"]
    # fix the cause and resume: only the failed partition runs again
    poison.unlink()
    run_ok(recipe2, "f2")
    after = events(tmp_path, "f2")[event_types(events(tmp_path, "f2")).index("JOB_RESUMED"):]
    assert sorted(e["partition_id"] for e in after if e["event_type"] == "PARTITION_START") == [1]
    assert len(output_rows(tmp_path / "out2.jsonl")) == 300


def test_malformed_records_are_rejected_counted_and_kept(tmp_path):
    data = tmp_path / "input.jsonl"
    good = [{"text": f"row {i} " * 20, "id": i} for i in range(50)]
    lines = [orjson.dumps(r) for r in good]
    lines.insert(10, b'{"text": "unterminated')
    lines.insert(20, b'{"id": 5}')
    lines.insert(30, b'{"text": 42}')
    lines.insert(40, b'{"text": "bad utf8 \xff\xfe"}')
    data.write_bytes(b"\n".join(lines) + b"\n")
    recipe = make_recipe(tmp_path, process=[{"text_length_filter": {"min_len": 1}}])
    run_ok(recipe, "m")
    assert len(output_rows(out_path(tmp_path))) == 50
    rejects = job_files(tmp_path, "m").rejects()
    assert [r["record"] for r in rejects] == [11, 21, 31, 41]
    assert "invalid JSON" in rejects[0]["reason"] and "missing text key" in rejects[1]["reason"]
    assert summary(tmp_path, "m")["rejected_samples"] == 4
    assert any(e["event_type"] == "WARNING" and e.get("rejected") == 4 for e in events(tmp_path, "m"))
    strict = make_recipe(tmp_path, name="strict", process=[{"text_length_filter": {"min_len": 1}}],
                         malformed_records="fail")
    proc = dj_process(strict, "m2")
    assert proc.returncode == 3 and "input.jsonl:11" in proc.stderr
    assert event_types(events(tmp_path, "m2"))[-1] == "JOB_FAILED"


def test_resuming_with_a_changed_input_is_refused(tmp_path):
    recipe = make_recipe(tmp_path, rows=100, process=[{"slow_mapper": {"seconds": 0}}])
    run_ok(recipe, "ch")
    with open(tmp_path / "input.jsonl", "ab") as fh:
        fh.write(b'{"text": "new row", "id": 999}\n')
    proc = dj_process(recipe, "ch")
    assert proc.returncode == 3 and "changed since job ch was planned" in proc.stderr


def test_an_in_process_run_leaves_the_process_as_it_was(tmp_path):
    """The job session restores what it took: the marker env, signal handlers, the STOP file and the lock."""
    import signal as sig

    recipe = make_recipe(tmp_path, rows=200, partition={"size": 100})
    handlers = {s: sig.getsignal(s) for s in (sig.SIGTERM, sig.SIGINT)}
    before = os.environ.get(MARKER_ENV)
    outcome = run_job(load_recipe(str(recipe)), "l")
    assert outcome.status == "completed"
    assert os.environ.get(MARKER_ENV) == before
    assert {s: sig.getsignal(s) for s in handlers} == handlers
    job = job_files(tmp_path, "l")
    assert not os.path.exists(job.paths.lock) and not os.path.exists(job.paths.stop_request)


def test_workers_take_their_checkpoint_keys_from_the_drivers_one_listing(tmp_path):
    """A local checkpoint directory lists in O(files), so the driver lists it once per stage and
    hands each task its keys (one listing per partition would make a job of n partitions O(n^2)).
    What a user sees of that hand-over: after a kill, every unfinished partition resumes from the
    latest checkpoint it has on disk, and the others are skipped."""
    recipe = make_recipe(tmp_path, rows=800, partition={"size": 100}, checkpoint={"strategy": "every_op"})
    killed = dj_process(recipe, "w", env={"DJ_FAILPOINTS": "op_done=12"})  # some partitions keep op checkpoints
    assert killed.returncode == -signal.SIGKILL
    job = job_files(tmp_path, "w")
    on_disk = job.checkpointed_ops()
    run_ok(recipe, "w")
    assert output_rows(out_path(tmp_path)) == expected_rows(recipe)
    evs = job.events()
    after = evs[event_types(evs).index("JOB_RESUMED"):]
    skipped = {e["partition_id"] for e in after if e["event_type"] == "PARTITION_SKIPPED"}
    loaded = {e["partition_id"]: e["reused_ops"] for e in after if e["event_type"] == "CHECKPOINT_LOAD"}
    assert loaded, "no partition was left mid-way with checkpoints: the kill came too late"
    assert loaded == {pid: max(ops) for pid, ops in on_disk.items() if pid not in skipped}
