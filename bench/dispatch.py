"""Per-partition costs of the driver at many partitions: planning and task dispatch.

    .venv/bin/python bench/dispatch.py                    # 100k partitions of 10 rows
    .venv/bin/python bench/dispatch.py --partitions 20000

- planning: the real planner (`build_plan`) over a generated JSON-lines file, writing one
  partition file per slice, as a job does; reported per partition.
- dispatch: the real scheduler (`Scheduler.run`) handing every partition to an executor whose
  tasks finish at once, with the driver's events going to a real event log; reported per
  partition. Task bodies cost nothing here, so this is the driver's own share.

Issue target: both stay in milliseconds per partition at 100k partitions."""
from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "worker"))

from djworker.config import Strategy  # noqa: E402
from djworker.demo_data import write_jsonl  # noqa: E402
from djworker.events import EventLog  # noqa: E402
from djworker.plan import build_plan  # noqa: E402
from djworker.run import PartitionResult, PartitionTask  # noqa: E402
from djworker.scheduler import RetryPolicy, Scheduler  # noqa: E402
from djworker.storage import Storage, StorageOptions  # noqa: E402
from loguru import logger  # noqa: E402


class InstantExecutor:
    """Every task completes as it is submitted: what is left is the driver's work."""

    def submit(self, task: PartitionTask) -> Future:
        fut: Future = Future()
        p = task.partition
        fut.set_result(PartitionResult(p.partition_id, p.sample_count, p.sample_count, "", 0, 0.0))
        return fut

    def request_stop(self) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partitions", type=int, default=100_000)
    ap.add_argument("--rows-per-partition", type=int, default=10)
    args = ap.parse_args()
    n, size = args.partitions, args.rows_per_partition
    logger.remove()  # the event log's echo on stderr: 2 lines per partition
    work = Path(tempfile.mkdtemp(prefix="djdispatch-"))
    try:
        data = work / "in.jsonl"
        write_jsonl(str(data), n * size)
        storage = Storage()
        t0 = time.perf_counter()
        plan = build_plan(storage, "bench", str(data), "text", size, 1024.0, str(work / "job"),
                          str(work / "rejects.jsonl"), lambda r: None)
        planning = time.perf_counter() - t0
        assert len(plan.partitions) == n, len(plan.partitions)

        tasks = [PartitionTask(job_id="bench", partition=p, ops=[], strategy=Strategy.every_op, n_ops=1, op_names=[],
                               checkpoint_root=str(work / "ckpt"), results_root=str(work / "results"),
                               intermediate_root=None, storage_options=StorageOptions())
                 for p in plan.partitions]
        log = EventLog(str(work / "events"), "bench")
        scheduler = Scheduler(InstantExecutor(), 2, RetryPolicy(0), log.emit, lambda: False, rng=random.Random(0))
        t0 = time.perf_counter()
        failed = scheduler.run(tasks)
        dispatch = time.perf_counter() - t0
        log.close()
        assert not failed
        print(f"partitions: {n} x {size} rows")
        print(f"planning   {planning:8.2f} s  {planning / n * 1000:8.3f} ms/partition  target: milliseconds")
        print(f"dispatch   {dispatch:8.2f} s  {dispatch / n * 1000:8.3f} ms/partition  target: milliseconds")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
