"""The event types the reference lists beyond the lifecycle ones: RESOURCE_USAGE,
PERFORMANCE_METRIC, PROCESSING_ERROR and DEBUG, each emitted by a real run."""
from __future__ import annotations

import io
from collections import Counter

from rich.console import Console

import tests.support.test_ops  # noqa: F401  (registers the test ops here too)
from djworker.jobs.monitor import JobProgressMonitor
from djworker.metrics import performance
from tests.support.engine import dj_process, event_types, events, job_files, make_recipe, output_rows, summary


def test_a_run_samples_its_resources_and_reports_its_performance(tmp_path):
    recipe = make_recipe(tmp_path, rows=600, event_logging={"resource_usage_interval_s": 0.2},
                         process=[{"slow_mapper": {"seconds": 0.3}}, {"clean_links_mapper": {}},
                                  {"text_length_filter": {"min_len": 100, "max_len": 600}}])
    proc = dj_process(recipe, "perf")
    assert proc.returncode == 0, proc.stderr
    evs = events(tmp_path, "perf")
    usage = [e for e in evs if e["event_type"] == "RESOURCE_USAGE"]
    # a baseline, samples while 6 partitions x 0.3 s run on 2 workers (~1 s), and a last one with the workers
    assert len(usage) >= 4
    assert all(u["rss_mb"] > 0 and u["peak_rss_mb"] >= u["rss_mb"] and u["system_available_mb"] > 0 for u in usage)
    assert "cpu_percent" not in usage[0] and all(u["cpu_percent"] >= 0 for u in usage[1:])  # a rate needs two samples
    assert max(u["processes"] for u in usage) >= 3  # the driver and its 2 pool workers
    [perf] = [e for e in evs if e["event_type"] == "PERFORMANCE_METRIC"]
    assert event_types(evs)[-2:] == ["PERFORMANCE_METRIC", "JOB_COMPLETE"]
    assert perf["partitions_processed"] == 6 and perf["partitions_skipped"] == 0
    assert perf["rows_in"] == 600 and perf["rows_out"] == len(output_rows(tmp_path / "out" / "result.jsonl"))
    assert set(perf["op_time_s"]) == {"slow_mapper", "clean_links_mapper", "text_length_filter"}
    assert perf["op_time_s"]["slow_mapper"] >= 6 * 0.3
    assert perf["checkpoint_saves"] == event_types(evs).count("CHECKPOINT_SAVE") == 18
    assert perf["peak_rss_mb"] == max(u["peak_rss_mb"] for u in usage)
    assert summary(tmp_path, "perf")["performance"]["rows_in"] == 600
    assert "DEBUG" not in event_types(evs)  # off unless asked for
    out = io.StringIO()
    shown = JobProgressMonitor("perf", str(tmp_path / "jobs")).display_progress(
        console=Console(file=out, width=160, force_terminal=False))
    assert shown["performance"]["rows_in"] == 600 and shown["performance"]["checkpoint_saves"] == 18
    assert f"{perf['rows_per_s']:,.0f} rows/s, 600 rows in" in out.getvalue() and "Resources" not in out.getvalue()

    proc = dj_process(recipe, "perf")  # a resume measures itself, not the run before it
    assert proc.returncode == 0, proc.stderr
    perf2 = [e for e in events(tmp_path, "perf") if e["event_type"] == "PERFORMANCE_METRIC"][-1]
    assert perf2["partitions_processed"] == 0 and perf2["partitions_skipped"] == 6 and perf2["rows_in"] == 0
    assert perf2["op_time_s"] == {} and perf2["checkpoint_saves"] == 0


def test_debug_events_record_scheduling_and_resume_decisions_when_enabled(tmp_path):
    recipe = make_recipe(tmp_path, rows=300, event_logging={"debug": True})
    proc = dj_process(recipe, "dbg")
    assert proc.returncode == 0, proc.stderr
    evs = events(tmp_path, "dbg")
    debug = [e for e in evs if e["event_type"] == "DEBUG"]
    per_partition = Counter(e["partition_id"] for e in debug)
    assert per_partition == {0: 2, 1: 2, 2: 2}  # submitted, and no checkpoint to resume from
    assert any("slots busy" in e["message"] for e in debug)
    assert any("starting from its input slice" in e["message"] for e in debug)
    log = job_files(tmp_path, "dbg").event_prose()
    assert "DEBUG" in log and "slots busy" in log


def test_a_planning_failure_is_a_processing_error_before_the_job_fails(tmp_path):
    recipe = make_recipe(tmp_path, rows=100, dataset_path=str(tmp_path / "missing.jsonl"))
    proc = dj_process(recipe, "nope")
    assert proc.returncode == 3, proc.stderr
    evs = events(tmp_path, "nope")
    types = event_types(evs)
    assert types[-3:] == ["PROCESSING_ERROR", "PERFORMANCE_METRIC", "JOB_FAILED"]
    err = evs[types.index("PROCESSING_ERROR")]
    assert err["phase"] == "planning" and "missing.jsonl" in err["error"] and err["stack_trace"]


def test_a_changed_input_on_resume_is_a_processing_error(tmp_path):
    recipe = make_recipe(tmp_path, rows=100, process=[{"slow_mapper": {"seconds": 0}}])
    assert dj_process(recipe, "ch").returncode == 0
    with open(tmp_path / "input.jsonl", "ab") as fh:
        fh.write(b'{"text": "new row", "id": 999}\n')
    proc = dj_process(recipe, "ch")
    assert proc.returncode == 3
    err = [e for e in events(tmp_path, "ch") if e["event_type"] == "PROCESSING_ERROR"]
    assert len(err) == 1 and "changed since job ch was planned" in err[0]["error"]


def test_performance_folds_only_the_runs_own_final_stage_events():
    evs = [
        {"event_type": "OP_COMPLETE", "timestamp": 5, "op_name": "a", "duration_s": 9.0},  # an earlier run
        {"event_type": "OP_COMPLETE", "timestamp": 11, "op_name": "a", "duration_s": 1.0},
        {"event_type": "OP_COMPLETE", "timestamp": 12, "op_name": "a", "duration_s": 0.5},
        {"event_type": "CHECKPOINT_SAVE", "timestamp": 12, "duration_s": 0.25},
        {"event_type": "PARTITION_COMPLETE", "timestamp": 13, "rows_in": 10, "rows_out": 7, "stage": 0, "stages": 2},
        {"event_type": "PARTITION_COMPLETE", "timestamp": 14, "rows_in": 7, "rows_out": 5, "stage": 1, "stages": 2},
        {"event_type": "PARTITION_FAILED", "timestamp": 14, "final": False},
        {"event_type": "PARTITION_FAILED", "timestamp": 14, "final": True},
    ]
    perf = performance(evs, run_start=10, now=20)
    assert perf["op_time_s"] == {"a": 1.5} and perf["checkpoint_saves"] == 1 and perf["checkpoint_save_s"] == 0.25
    assert (perf["partitions_processed"], perf["rows_in"], perf["rows_out"]) == (1, 10, 5)
    assert perf["retries"] == 1 and perf["wall_s"] == 10 and perf["rows_per_s"] == 1.0


def test_the_drivers_incremental_fold_reports_what_a_full_refold_does(tmp_path):
    """The driver folds events as they come (keeping none) and learns the plan late; the monitor
    re-folds the whole log with the plan. Both must report the same progress."""
    import json

    from djworker.progress import ProgressFold, compact, progress

    recipe = make_recipe(tmp_path, rows=600, process=[{"slow_mapper": {"seconds": 0.05}}, {"clean_links_mapper": {}}])
    assert dj_process(recipe, "f", env={"DJ_FAILPOINTS": "partition_done=3"}).returncode != 0  # killed mid-run
    assert dj_process(recipe, "f").returncode == 0
    evs = events(tmp_path, "f")
    plan = json.loads((tmp_path / "jobs" / "f" / "metadata" / "dataset_mapping.json").read_text())
    resumed_at = event_types(evs).index("JOB_RESUMED")
    for cut in (resumed_at + 3, resumed_at + 20, len(evs) - 1, len(evs)):  # mid-run and after the end
        fold = ProgressFold(history=False)
        for ev in evs[:resumed_at + 1]:  # the earlier run's events and this run's start, before the plan is read
            fold.add(ev)
        fold.seed(plan)
        for ev in evs[resumed_at + 1:cut]:
            fold.add(ev)
        now = evs[cut - 1]["timestamp"] + 1
        assert compact(fold.result(plan, now)) == compact(progress(evs[:cut], plan, now))
    assert fold.ops == [] and fold.checkpoints == [] and fold.checkpoint_count == event_types(evs).count("CHECKPOINT_SAVE")
