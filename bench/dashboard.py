"""What the dashboard costs at scale: one refresh of its data against the monitor's read of the
same job (the baseline: what `dj-monitor` does per redraw), on a synthetic job's real files.

    .venv/bin/python bench/dashboard.py                      # 10k partitions, 60 % done
    .venv/bin/python bench/dashboard.py --partitions 100000

Prints the seconds of each, their ratio, and the size of the JSON the page polls."""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from types import SimpleNamespace

import orjson

from djworker.dashboard.source import JobView
from djworker.jobs.monitor import JobProgressMonitor
from djworker.jobs.paths import JobPaths

OPS = ("clean_links_mapper", "whitespace_normalization_mapper", "text_length_filter")


def write_job(base: str, job_id: str, partitions: int, done: float) -> None:
    """The job's files where the driver writes them, with the recipe's default layout under base."""
    paths = JobPaths.of(SimpleNamespace(work_dir=base, event_log_dir=None, checkpoint_dir=None), job_id)
    os.makedirs(os.path.dirname(paths.mapping))
    os.makedirs(paths.event_dir)
    plan = {"total_samples": partitions * 100,
            "partitions": [{"partition_id": i, "sample_count": 100} for i in range(partitions)]}
    with open(paths.mapping, "wb") as fh:
        fh.write(orjson.dumps(plan))
    with open(paths.summary, "wb") as fh:
        fh.write(orjson.dumps({"job_id": job_id, "status": "completed", "event_log_dir": paths.event_dir,
                               "attempts": 1}))
    t0 = time.time() - 3600
    with open(paths.events_file, "wb") as fh:
        def emit(event_type: str, t: float, **fields) -> None:
            fh.write(orjson.dumps({"event_type": event_type, "job_id": job_id, "timestamp": t0 + t,
                                   "time": "", **fields}) + b"\n")
        emit("JOB_START", 0)
        for i in range(int(partitions * done)):
            t = i * 3600 / partitions
            emit("PARTITION_START", t, partition_id=i)
            for k, op in enumerate(OPS):
                emit("OP_START", t, partition_id=i, op_idx=k, op_name=op)
                emit("OP_COMPLETE", t, partition_id=i, op_idx=k, op_name=op, rows_in=100,
                     rows_out=70 if k == 2 else 100, duration_s=0.01)
                emit("CHECKPOINT_SAVE", t, partition_id=i, op_idx=k, op_name=op, duration_s=0.001)
            emit("PARTITION_COMPLETE", t, partition_id=i, rows_in=100, rows_out=70)
            if i % 100 == 0:
                emit("RESOURCE_USAGE", t, rss_mb=300.0, cpu_percent=150.0)
        emit("JOB_COMPLETE", 3600)


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--partitions", type=int, default=10_000)
    p.add_argument("--done", type=float, default=0.6, help="share of partitions completed (default %(default)s)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as base:
        write_job(base, "bench", args.partitions, args.done)
        monitor = best_of(args.repeat, lambda: JobProgressMonitor("bench", base).get_progress_data())
        dashboard = best_of(args.repeat, lambda: JobView("bench", base).data())
        size = len(orjson.dumps(JobView("bench", base).data()))
    print(f"{args.partitions} partitions ({args.done:.0%} done):")
    print(f"  monitor read (baseline)  {monitor:.3f} s")
    print(f"  dashboard refresh        {dashboard:.3f} s   ratio {dashboard / monitor:.2f}")
    print(f"  /api/dashboard JSON      {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
