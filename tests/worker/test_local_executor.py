"""The local process pool: every task resolves exactly once, after all of its events."""
from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool

import psutil
import pytest

from djworker.executors import local
from djworker.executors.local import LocalExecutor
from tests.support.wait import wait_for


def _echo(task, emit, should_stop):
    emit({"event_type": "INFO", "message": f"ran {task}"})
    return task


def test_a_task_whose_end_marker_beats_submit_still_resolves(monkeypatch):
    monkeypatch.setattr(local, "run_partition", _echo)  # workers fork in __init__ and inherit it
    seen: list[dict] = []
    ex = LocalExecutor(1, seen.append)
    pool_submit = ex.pool.submit

    def submit_that_returns_late(*args):
        fut = pool_submit(*args)
        fut.result(timeout=30)
        time.sleep(0.5)  # by now the drainer has read the task's end marker
        return fut

    monkeypatch.setattr(ex.pool, "submit", submit_that_returns_late)
    try:
        assert ex.submit("p0").result(timeout=30) == "p0"
        assert [e["message"] for e in seen] == ["ran p0"]
    finally:
        ex.shutdown()


@pytest.mark.parametrize("victim", [0, 1])
def test_shutdown_returns_after_an_idle_worker_was_killed(victim):
    """The killed worker may have held the task queue's read lock: its peer can never exit by itself."""
    ex = LocalExecutor(2, lambda event: None)
    pids = sorted(ex.worker_pids())
    os.kill(pids[victim], signal.SIGKILL)
    time.sleep(0.5)  # the pool notices the death and tries its own clean-up first
    closer = threading.Thread(target=ex.shutdown, daemon=True)
    closer.start()
    closer.join(timeout=30)
    assert not closer.is_alive(), "shutdown hung"
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


def test_a_dead_worker_gets_its_peers_killed_at_once_and_the_next_submit_gets_a_fresh_pool(monkeypatch):
    """From Python 3.12 a broken pool holds the lock submit() needs until its SIGTERMed workers exit;
    ours ignore SIGTERM, so without the executor's watch a submit after a worker died would block."""
    monkeypatch.setattr(local, "run_partition", _echo)
    ex = LocalExecutor(2, lambda event: None)
    try:
        first = sorted(ex.worker_pids())
        os.kill(first[0], signal.SIGKILL)
        wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                                 for p in first), 10, "the surviving worker to be killed", every=0.05,
                 ignore=(psutil.NoSuchProcess,))
        ex.on_failure(BrokenProcessPool("a worker died"))  # what the scheduler does with the failed partition
        results: list[str] = []
        submitted = threading.Thread(target=lambda: results.append(ex.submit("p1").result(timeout=30)), daemon=True)
        submitted.start()
        submitted.join(timeout=30)
        assert not submitted.is_alive(), "submit blocked on the broken pool"
        assert results == ["p1"]
        assert not set(ex.worker_pids()) & set(first)
    finally:
        ex.shutdown()
