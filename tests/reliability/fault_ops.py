"""Test-only ops that fail the way processes die, loaded through DJ_EXTRA_OP_MODULES."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pyarrow as pa

from djworker.ops.base import Mapper, register


@register("die_holding_event_lock_mapper")
class DieHoldingEventLockMapper(Mapper):
    """The first time it runs in a job (a marker file in `state_dir`), takes the worker's event
    queue write lock and SIGKILLs its own process: a worker killed in the middle of sending an
    event, which leaves that cross-process lock held. Identity otherwise."""

    state_dir: str

    def process(self, table: pa.Table) -> pa.Table:
        marker = Path(self.state_dir) / "died-holding-the-lock"
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            from djworker.executors import local

            lock = getattr(local._events, "_wlock", None)  # multiprocessing.Queue's cross-process write lock
            if lock is not None:
                lock.acquire()
            os.kill(os.getpid(), signal.SIGKILL)
        return table
