"""Test-only ops, loaded in driver and workers through DJ_EXTRA_OP_MODULES."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa

from djworker.ops.base import Mapper, register


@register("slow_mapper")
class SlowMapper(Mapper):
    """Identity, after sleeping `seconds` per batch: makes a job slow enough to watch and stop."""

    seconds: float = 0.5

    def process(self, table: pa.Table) -> pa.Table:
        time.sleep(self.seconds)
        return table


@register("flaky_mapper")
class FlakyMapper(Mapper):
    """Fails the first `failures` attempts of each partition whose first row id is in `first_ids` (all if empty).

    Attempts are counted with marker files in `state_dir`, so they survive process deaths."""

    state_dir: str
    failures: int = 1
    first_ids: list[int] = []
    poison_file: str = ""  # if set, fail (those partitions) while this file exists, whatever `failures` says

    def process(self, table: pa.Table) -> pa.Table:
        first = table.column("id")[0].as_py() if table.num_rows and "id" in table.column_names else -1
        if self.poison_file:
            if os.path.exists(self.poison_file) and (not self.first_ids or first in self.first_ids):
                raise RuntimeError(f"flaky_mapper: poisoned by {self.poison_file}")
            return table
        key = Path(self.state_dir) / f"rows-from-{first}"
        if not self.first_ids or first in self.first_ids:
            key.parent.mkdir(parents=True, exist_ok=True)
            seen = len(list(key.parent.glob(key.name + ".*")))
            if seen < self.failures:
                (key.parent / f"{key.name}.{seen}-{os.getpid()}").touch()
                raise RuntimeError(f"flaky_mapper: injected failure {seen + 1}/{self.failures}")
        return table


@register("pid_mapper")
class PidMapper(Mapper):
    """Identity. In partitions whose first row id is in `first_ids` (all if empty), records the pid of
    the process running it as `pid_dir/rows-from-<id>.<attempt>` and, on the first attempt only,
    sleeps `seconds`: a test can find the worker running a partition and kill it mid-op."""

    pid_dir: str
    seconds: float = 1.0
    first_ids: list[int] = []

    def process(self, table: pa.Table) -> pa.Table:
        first = table.column("id")[0].as_py() if table.num_rows and "id" in table.column_names else -1
        if self.first_ids and first not in self.first_ids:
            return table
        os.makedirs(self.pid_dir, exist_ok=True)
        attempt = len(list(Path(self.pid_dir).glob(f"rows-from-{first}.*")))
        path = Path(self.pid_dir) / f"rows-from-{first}.{attempt}"
        tmp = Path(self.pid_dir) / f".{path.name}.tmp"
        tmp.write_text(str(os.getpid()))
        os.replace(tmp, path)
        if attempt == 0:
            time.sleep(self.seconds)
        return table


@register("batch_probe_mapper")
class BatchProbeMapper(Mapper):
    """Identity that records how many rows each call saw, one file per call in `state_dir`."""

    state_dir: str

    def process(self, table: pa.Table) -> pa.Table:
        Path(self.state_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.state_dir) / f"{os.getpid()}-{time.monotonic_ns()}").write_text(str(table.num_rows))
        return table
