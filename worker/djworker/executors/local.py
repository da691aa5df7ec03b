"""A process pool of `np` workers, reused across partitions.

Workers ignore SIGINT/SIGTERM: the driver owns shutdown and tells them to stop
through a shared flag, so a Ctrl-C or `dj-stop` checkpoints in-flight partitions
instead of killing them mid-op. A worker killed outright breaks the pool; the
driver sees its partitions fail (retryable) and the pool is rebuilt."""
from __future__ import annotations

import multiprocessing as mp
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Optional

import psutil

from ..run import PartitionTask, run_partition

_events: Any = None
_stop: Any = None


def _init_worker(events: Any, stop: Any) -> None:
    global _events, _stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _events, _stop = events, stop


def _run(task: PartitionTask) -> Any:
    return run_partition(task, _events.put, lambda: bool(_stop.value))


class LocalExecutor:
    def __init__(self, np: int, on_event: Callable[[dict], None]):
        self.np = np
        self.on_event = on_event
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(["djworker.run", "djworker.ops._load_all"])
        self.events = self.ctx.Queue()
        # A lock-free shared byte: safe to set from a signal handler, cheap to poll between ops.
        self.stop_flag = self.ctx.RawValue("b", 0)
        self.pool: Optional[ProcessPoolExecutor] = None
        self._drainer = threading.Thread(target=self._drain, name="dj-events", daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        while True:
            event = self.events.get()
            if event is None:  # shutdown's sentinel: every worker event before it is written
                return
            self.on_event(event)

    def _pool(self) -> ProcessPoolExecutor:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(self.np, mp_context=self.ctx, initializer=_init_worker,
                                            initargs=(self.events, self.stop_flag))
        return self.pool

    def warm_up(self) -> None:
        """Start the workers in the background: they boot while the driver plans."""
        pool = self._pool()
        threading.Thread(target=lambda: [pool.submit(int) for _ in range(self.np)], name="dj-warm-up",
                         daemon=True).start()

    def submit(self, task: PartitionTask) -> Future:
        try:
            return self._pool().submit(_run, task)
        except BrokenProcessPool:
            self._discard_pool()
            return self._pool().submit(_run, task)

    def on_failure(self, err: BaseException) -> None:
        """A broken pool (a worker was killed) is replaced before the next submit."""
        if isinstance(err, BrokenProcessPool):
            self._discard_pool()

    def _discard_pool(self) -> None:
        if self.pool is not None:
            self._kill_workers()
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    def request_stop(self) -> None:
        self.stop_flag.value = 1

    def worker_pids(self) -> list[int]:
        """Only processes this executor started (the caller may own other children)."""
        return list(getattr(self.pool, "_processes", None) or {})

    def _kill_workers(self) -> None:
        for pid in self.worker_pids():
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass

    def shutdown(self, kill: bool = False) -> None:
        if self.pool is not None:
            if kill:
                self._kill_workers()
            self.pool.shutdown(wait=not kill, cancel_futures=True)
            self.pool = None
        self.events.put(None)
        self._drainer.join(timeout=5)
