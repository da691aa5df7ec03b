"""Prometheus metrics for one job, built at scrape time from the dashboard's data.

Labels are job_id and op, plus a partition `state` from a fixed set of six: never a
partition id, so a 100k-partition job has as many series as a 10-partition one."""
from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .view import STATES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def families(d: dict[str, Any]) -> list[Metric]:
    """The metric families for one job's dashboard data. Pure."""
    job = d["job_id"] or ""
    progress = GaugeMetricFamily("dj_job_progress_ratio", "Share of the job's input samples processed (0..1).",
                                 labels=["job_id"])
    progress.add_metric([job], d["progress_percent"] / 100.0)
    parts = GaugeMetricFamily("dj_partitions", "Partitions by state.", labels=["job_id", "state"])
    counts = {s: 0 for s in STATES}
    for code in d["grid"]["states"]:
        counts[next(s for s, c in STATES.items() if c == code)] += 1
    for state, n in counts.items():
        parts.add_metric([job, state], n)
    processed = CounterMetricFamily("dj_rows_processed", "Input rows of completed partitions.", labels=["job_id"])
    processed.add_metric([job], d["samples"]["processed"])
    kept = CounterMetricFamily("dj_rows_kept", "Rows left after every op, of completed partitions.", labels=["job_id"])
    kept.add_metric([job], d["samples"]["output"])
    op_s = CounterMetricFamily("dj_op_seconds", "Seconds spent in each op, summed over partitions.",
                               labels=["job_id", "op"])
    op_in = CounterMetricFamily("dj_op_rows_in", "Rows into each op.", labels=["job_id", "op"])
    op_out = CounterMetricFamily("dj_op_rows_out", "Rows out of each op.", labels=["job_id", "op"])
    saves = CounterMetricFamily("dj_checkpoint_saves", "Checkpoints saved after each op.", labels=["job_id", "op"])
    save_s = CounterMetricFamily("dj_checkpoint_save_seconds", "Seconds spent saving checkpoints after each op.",
                                 labels=["job_id", "op"])
    for op in d["ops"]:
        name = op["op_name"] or "?"
        op_s.add_metric([job, name], op["duration_s"])
        op_in.add_metric([job, name], op["rows_in"])
        op_out.add_metric([job, name], op["rows_out"])
        saves.add_metric([job, name], op["checkpoint_saves"])
        save_s.add_metric([job, name], op["checkpoint_s"])
    retries = CounterMetricFamily("dj_partition_retries", "Partition retries (each partition's highest retry count, "
                                  "summed).", labels=["job_id"])
    retries.add_metric([job], sum(tip[2] or 0 for tip in d["grid"]["tips"]))
    return [progress, parts, processed, kept, op_s, op_in, op_out, saves, save_s, retries]


class _Collector:
    def __init__(self, data: Callable[[], dict[str, Any]]):
        self.data = data

    def collect(self) -> Iterator[Metric]:
        yield from families(self.data())


def render(data: Callable[[], dict[str, Any]]) -> Callable[[], bytes]:
    """A function that renders the text exposition of the job whose data `data()` returns."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(data))
    return lambda: generate_latest(registry)
