"""A process pool of `np` workers, reused across partitions.

Workers are forked once per run and ignore SIGINT/SIGTERM: the driver owns shutdown and tells them to stop
through a shared flag, so a Ctrl-C or `dj-stop` checkpoints in-flight partitions
instead of killing them mid-op. A worker killed outright breaks the pool; the
driver sees its partitions fail (retryable) and the pool is rebuilt."""
from __future__ import annotations

import itertools
import multiprocessing as mp
import multiprocessing.connection
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Optional, Sequence

import pyarrow as pa
from loguru import logger

from ..run import PartitionTask, run_partition
from .base import Executor

_events: Any = None
_stop: Any = None
DONE = "__dj_task_done__"


def _init_worker(events: Any, stop: Any, warm: Sequence[Any]) -> None:
    global _events, _stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _events, _stop = events, stop
    pa.array([""])  # pyarrow's first conversion of Python objects imports pandas (~0.25 s): do it before any partition
    for op in warm:
        try:
            op.warm_up()
        except Exception:  # noqa: BLE001 - the op's first real call reports its own error
            pass


def _run(task: PartitionTask, token: int) -> Any:
    try:
        return run_partition(task, _events.put, lambda: bool(_stop.value))
    finally:
        _events.put({DONE: token})  # after every event of this task, on the same queue


class LocalExecutor(Executor):
    stop_is_signal_safe = True  # a store into a shared byte

    def __init__(self, np: int, on_event: Callable[[dict], None], warm: Sequence[Any] = ()):
        self.np = np
        self.on_event = on_event
        self.warm = list(warm)  # ops whose warm_up() each worker runs as it starts
        # fork: workers start instantly with the driver's imports. They are forked here,
        # before this executor starts its event thread (a rebuilt pool forks later, with
        # that thread parked in a queue read whose lock the workers never take).
        self.ctx = mp.get_context("fork")
        self.events = self.ctx.Queue()
        # A lock-free shared byte: safe to set from a signal handler, cheap to poll between ops.
        self.stop_flag = self.ctx.RawValue("b", 0)
        self.pool: Optional[ProcessPoolExecutor] = None
        self._tasks: dict[int, list[Any]] = {}  # token -> [pool future, our future, end marker seen]
        self._tokens = itertools.count()
        self._lock = threading.Lock()
        import djworker.ops._load_all  # noqa: F401  (workers inherit the registered ops)
        self._pool()  # forks the workers now; they warm up while the driver plans
        self._drainer = self._drain_in_background(self.events)

    def _drain_in_background(self, events: Any) -> threading.Thread:
        thread = threading.Thread(target=self._drain, args=(events,), name="dj-events", daemon=True)
        thread.start()
        return thread

    def _drain(self, events: Any) -> None:
        while True:
            event = events.get()
            if event is None:  # shutdown's sentinel: every worker event before it is written
                return
            if DONE in event:
                self._settle(event[DONE], marker=True)
                continue
            try:
                self.on_event(event)
            except Exception:  # noqa: BLE001 - a dead drainer would leave every running task unresolved
                logger.exception("could not record a worker event: {}", event.get("event_type"))

    def _settle(self, token: int, marker: bool = False) -> None:
        """Resolve a task's future once its result is in *and* all its events are written.

        Results and events travel on different pipes; waiting for the task's end marker
        keeps PARTITION_COMPLETE after the partition's own events in the log. A killed
        worker sends no marker, so a broken pool resolves at once."""
        with self._lock:
            entry = self._tasks.get(token)
            if entry is None:
                return
            if marker:
                entry[2] = True
            inner, outer, seen = entry
            if inner is None or not inner.done() or not (seen or isinstance(inner.exception(), BrokenProcessPool)):
                return
            del self._tasks[token]
        if inner.exception() is not None:
            outer.set_exception(inner.exception())
        else:
            outer.set_result(inner.result())

    def _pool(self) -> ProcessPoolExecutor:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(self.np, mp_context=self.ctx, initializer=_init_worker,
                                            initargs=(self.events, self.stop_flag, self.warm))
            self.pool.submit(int)  # a fork pool starts all its workers at the first submit
            threading.Thread(target=self._watch, args=(self.pool,), name="dj-pool-watch", daemon=True).start()
        return self.pool

    def _watch(self, pool: ProcessPoolExecutor) -> None:
        """A worker that dies breaks the pool: kill its peers at once. They ignore SIGTERM, and from
        Python 3.12 the pool's manager thread holds the lock that submit() and shutdown() take
        until the peers it SIGTERMed have exited. Their partitions fail (and are retried) either way."""
        workers = list((pool._processes or {}).values())
        mp.connection.wait([w.sentinel for w in workers])
        if self.pool is pool:  # not one of our own closes
            for worker in workers:
                worker.kill()

    def submit(self, task: PartitionTask) -> Future:
        token = next(self._tokens)
        outer: Future = Future()
        # Registered before the pool sees the task: a quick task's end marker may reach the
        # drainer before submit() returns, and a marker for an unknown token would be lost.
        entry: list[Any] = [None, outer, False]
        with self._lock:
            self._tasks[token] = entry
        try:
            try:
                inner = self._pool().submit(_run, task, token)
            except BrokenProcessPool:
                self._discard_pool()
                inner = self._pool().submit(_run, task, token)
        except BaseException:
            with self._lock:
                del self._tasks[token]
            raise
        with self._lock:
            entry[0] = inner
        inner.add_done_callback(lambda _: self._settle(token))
        return outer

    def on_failure(self, err: BaseException) -> None:
        """A broken pool (a worker was killed) is replaced before the next submit."""
        if isinstance(err, BrokenProcessPool):
            self._discard_pool()

    def _discard_pool(self) -> None:
        if self.pool is not None:
            self._close_pool(grace_s=0)
            self._fresh_queue()

    def _close_pool(self, grace_s: float) -> None:
        """Shut the pool down; workers still alive after grace_s are killed.

        Workers ignore SIGTERM, so the pool's own clean-up cannot terminate them, and one killed
        while waiting for work leaves the task queue's read lock held: its peers would wait on
        that lock forever. No task is running when this is called, so killing loses nothing.
        shutdown() runs on a thread of its own: from Python 3.12 a broken pool's manager holds
        the shutdown lock until its SIGTERMed workers exit, which ours do only once killed here."""
        pool, self.pool = self.pool, None
        workers = list((pool._processes or {}).values())
        manager = pool._executor_manager_thread
        closing = threading.Thread(target=pool.shutdown, kwargs={"wait": False, "cancel_futures": True},
                                   name="dj-pool-shutdown", daemon=True)
        closing.start()
        alive = {w.sentinel: w for w in workers}
        deadline = time.monotonic() + grace_s
        while alive and (left := deadline - time.monotonic()) > 0:
            for sentinel in mp.connection.wait(list(alive), timeout=left):
                alive.pop(sentinel)
        for worker in alive.values():
            worker.kill()
        closing.join(timeout=10)
        if manager is not None:
            manager.join(timeout=10)

    def _fresh_queue(self) -> None:
        """A worker killed while sending an event leaves the queue's cross-process write lock
        held for good, and one killed after its result but before its end marker leaves a task
        that would wait forever: the next pool gets a new queue, and the old pool's finished
        tasks resolve now."""
        old, self.events = self.events, self.ctx.Queue()
        old.cancel_join_thread()  # never wait at exit for a feeder stuck on that lock
        old.put(None)
        self._drainer = self._drain_in_background(self.events)
        with self._lock:
            finished = [token for token, (inner, _, _) in self._tasks.items() if inner is not None and inner.done()]
        for token in finished:
            self._settle(token, marker=True)

    def request_stop(self) -> None:
        self.stop_flag.value = 1

    def worker_pids(self) -> list[int]:
        """Only processes this executor started (the caller may own other children)."""
        return list(getattr(self.pool, "_processes", None) or {})

    def shutdown(self, kill: bool = False) -> None:
        """kill: the driver is stopping, in-flight partitions have checkpointed; else let idle workers exit."""
        if self.pool is not None:
            self._close_pool(grace_s=0 if kill else 2)
        self.events.cancel_join_thread()  # the drainer below confirms delivery; never block exit on it
        self.events.put(None)
        self._drainer.join(timeout=5)
