"""The dashboard's pure core: events + the monitor's progress data -> the page's JSON and the metrics."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from djworker.dashboard.prometheus import render
from djworker.dashboard.view import dashboard, throughput_series, timeline
from djworker.progress import progress, reconcile

T0 = 1_000_000.0


def ev(event_type: str, t: float, **fields):
    return {"event_type": event_type, "job_id": "j", "timestamp": T0 + t, "time": f"t+{t}", **fields}


PLAN = {"total_samples": 60, "partitions": [{"partition_id": i, "sample_count": 10} for i in range(6)]}
EVENTS = [
    ev("JOB_START", 0),
    ev("PARTITION_START", 1, partition_id=0),
    ev("OP_COMPLETE", 2, partition_id=0, op_idx=0, op_name="a_mapper", rows_in=10, rows_out=10, duration_s=0.5),
    ev("CHECKPOINT_SAVE", 2, partition_id=0, op_idx=0, op_name="a_mapper", duration_s=0.25),
    ev("OP_COMPLETE", 3, partition_id=0, op_idx=1, op_name="b_filter", rows_in=10, rows_out=4, duration_s=0.5),
    ev("PARTITION_COMPLETE", 3, partition_id=0, rows_in=10, rows_out=4),
    ev("PARTITION_SKIPPED", 4, partition_id=1, rows_out=7),  # done by an earlier run
    ev("PARTITION_START", 5, partition_id=2),
    ev("OP_COMPLETE", 5, partition_id=2, op_idx=0, op_name="a_mapper", rows_in=10, rows_out=10, duration_s=0.5),
    ev("PARTITION_FAILED", 6, partition_id=2, retry_count=1, error="boom"),  # will be retried
    ev("PARTITION_START", 7, partition_id=3),
    ev("PARTITION_START", 7, partition_id=4),
    ev("PARTITION_FAILED", 8, partition_id=4, retry_count=2, final=True, error="gave up"),
    ev("WARNING", 9, message="disk is filling"),
    ev("RESOURCE_USAGE", 9, rss_mb=100.0, cpu_percent=50.0),
]


def data(events=EVENTS, driver="alive"):
    """What jobs.common.job_progress gives the page: the reconciled fold plus the overview."""
    fold = reconcile(progress(events, PLAN, T0 + 10), PLAN, T0 + 10, driver_dead=driver in ("gone", "reused"))
    out = fold.model_dump()
    out["job_overview"] = {"attempts": 2, "resumption_command": "dj-process --config r.yaml --job_id j",
                           "driver": {"state": driver, "pid": 1, "host": "h", "detail": ""}}
    return dashboard(out, timeline(events), T0 + 10)


def test_grid_has_a_state_per_partition_in_plan_order():
    d = data()
    assert d["grid"]["ids"] == [0, 1, 2, 3, 4, 5]
    # done, skipped, retrying, running, failed, pending
    assert d["grid"]["states"] == "dsyrfp"
    assert d["grid"]["tips"][0][:5] == [10, 4, 0, None, "after a_mapper at t+2"]
    assert d["grid"]["tips"][4][2] == 2 and d["grid"]["tips"][4][5] == "gave up"


def test_ops_funnel_problems_and_resources():
    d = data()
    assert [(o["op_name"], o["rows_in"], o["rows_out"], o["is_filter"]) for o in d["ops"]] == \
        [("a_mapper", 20, 20, False), ("b_filter", 10, 4, True)]
    assert d["ops"][0]["checkpoint_saves"] == 1 and d["ops"][0]["checkpoint_s"] == 0.25
    assert d["ops"][1]["drop_rate"] == 0.6
    # partition 2 is still inside the ops: it is left out, or a_mapper -> b_filter would look like a drop
    assert d["funnel"] == [{"label": "input", "rows": 10}, {"label": "a_mapper", "rows": 10},
                           {"label": "b_filter", "rows": 4}]
    assert [p["event_type"] for p in d["problems"]] == ["WARNING", "PARTITION_FAILED", "PARTITION_FAILED"]
    assert d["resources"] == [[T0 + 9, 100.0, 50.0]]
    assert d["status"] == "running" and d["attempt"] == 2 and d["resume_command"] is None


def test_a_dead_driver_shows_interrupted_with_the_resume_command():
    d = data(driver="gone")
    assert d["status"] == "interrupted"
    assert d["resume_command"] == "dj-process --config r.yaml --job_id j"
    assert "r" not in d["grid"]["states"] and "y" not in d["grid"]["states"]


def test_throughput_buckets_keep_every_row():
    completions = [(T0 + t, 100) for t in range(0, 600, 3)]
    series = throughput_series(completions, max_points=50)
    width = series[1][0] - series[0][0]
    assert len(series) <= 51
    assert round(sum(rate * width for _, rate in series)) == 100 * len(completions)
    assert throughput_series([]) == []


def test_metrics_parse_and_carry_only_low_cardinality_labels():
    d = data()
    families = {f.name: f for f in text_string_to_metric_families(render(lambda: d)().decode())}
    parts = {s.labels["state"]: s.value for s in families["dj_partitions"].samples}
    assert parts == {"pending": 1, "running": 1, "retrying": 1, "done": 1, "skipped": 1, "failed": 1}
    assert families["dj_rows_processed"].samples[0].value == 20  # partitions 0 and 1
    assert families["dj_rows_kept"].samples[0].value == 11
    assert {s.labels["op"]: s.value for s in families["dj_op_seconds"].samples} == {"a_mapper": 1.0, "b_filter": 0.5}
    assert families["dj_partition_retries"].samples[0].value == 3
    labels = {k for f in families.values() for s in f.samples for k in s.labels}
    assert labels == {"job_id", "op", "state"}
