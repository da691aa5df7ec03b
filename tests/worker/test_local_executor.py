"""The local process pool: every task resolves exactly once, after all of its events."""
from __future__ import annotations

import time

from djworker.executors import local
from djworker.executors.local import LocalExecutor


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
