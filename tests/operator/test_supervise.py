"""main.supervise: kopf ending on an error is restarted in-process with a bounded backoff;
a clean stop ends the operator. No servers: kopf.run is played by a function."""
from __future__ import annotations

import threading

import pytest

from djoperator import main
from djoperator.metrics import OperatorMetrics


class Runs:
    """Plays kopf.run: raises the queued errors one per call, then returns (a clean stop)."""

    def __init__(self, errors: list[Exception], readiness: main.Readiness) -> None:
        self.errors, self.readiness, self.calls = list(errors), readiness, 0
        self.insights_seen: list[object] = []

    def __call__(self, stop: main.StopFlag) -> None:
        self.calls += 1
        self.insights_seen.append(self.readiness.insights)
        assert self.readiness.restarting is None, "each run starts with the restart notice cleared"
        if self.errors:
            raise self.errors.pop(0)


def test_kopf_stopping_on_errors_is_restarted_with_a_doubling_capped_backoff_then_a_clean_stop_returns():
    readiness, metrics, slept = main.Readiness(), OperatorMetrics(), []
    errors = [RuntimeError("404 page not found")] * 6
    runs = Runs(errors, readiness)
    notices: list[str] = []
    main.supervise(runs, readiness, metrics, served=lambda: True,
                   sleep=lambda s: (slept.append(s), notices.append(readiness.missing())), clock=lambda: 0.0)
    assert runs.calls == 7
    first, cap = main.RESTART_BACKOFF_S
    assert slept == [min(first * 2 ** i, cap) for i in range(6)]
    assert all(n and n.startswith("kopf stopped on RuntimeError: 404 page not found") for n in notices)
    assert len({id(i) for i in runs.insights_seen}) == 7, "every run gets fresh kopf insights"
    assert metrics.registry.get_sample_value("datajuicer_operator_kopf_restarts_total", {"error": "RuntimeError"}) == 6


def test_the_backoff_starts_over_after_a_run_that_lasted():
    readiness, slept = main.Readiness(), []
    ticks = iter([0.0, 1.0, 1.0, 2.0, 2.0, 2.0 + main.STABLE_AFTER_S, 500.0])
    runs = Runs([RuntimeError("a"), RuntimeError("b"), RuntimeError("c")], readiness)
    main.supervise(runs, readiness, OperatorMetrics(), served=lambda: True, sleep=slept.append,
                   clock=lambda: next(ticks), check_every_s=3600)
    first = main.RESTART_BACKOFF_S[0]
    assert slept == [first, first * 2, first]


def test_an_interrupt_is_not_swallowed():
    readiness = main.Readiness()

    def interrupted(stop: main.StopFlag) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        main.supervise(interrupted, readiness, OperatorMetrics(), served=lambda: True, sleep=lambda s: None)


class Unwatched:
    """Plays kopf.run after a scan that found no DataJuicerJob API: it runs until stopped.
    The second run finds the API and stops cleanly."""

    def __init__(self, readiness: main.Readiness) -> None:
        self.readiness, self.calls = readiness, 0

    def __call__(self, stop: main.StopFlag) -> None:
        self.calls += 1
        self.readiness.started.set()
        self.readiness.insights.ready_resources.set()  # scanned; nothing of ours is watched
        if self.calls == 1:
            assert stop.requested.wait(30), "the supervisor never stopped the kopf that does not watch DataJuicerJobs"


@pytest.mark.parametrize("served", [True, False])
def test_a_kopf_that_does_not_watch_datajuicerjobs_is_restarted_only_once_their_api_is_served(monkeypatch, served):
    monkeypatch.setattr(main, "UNWATCHED_GRACE_S", 0.2)
    readiness, metrics = main.Readiness(), OperatorMetrics()
    runs = Unwatched(readiness)
    asked = threading.Event()

    def api_served() -> bool:
        asked.set()
        return served

    if served:
        main.supervise(runs, readiness, metrics, served=api_served, sleep=lambda s: None, check_every_s=0.05)
        assert runs.calls == 2
        assert metrics.registry.get_sample_value("datajuicer_operator_kopf_restarts_total", {"error": "Restart"}) == 1
    else:  # no CRD: kopf's own CRD watch will notice one being created; no restart meanwhile
        worker = threading.Thread(target=main.supervise, args=(runs, readiness, metrics),
                                  kwargs=dict(served=api_served, sleep=lambda s: None, check_every_s=0.05), daemon=True)
        worker.start()
        assert asked.wait(10)
        worker.join(0.5)
        assert worker.is_alive() and runs.calls == 1
        assert readiness.missing() == "datajuicerjobs.datajuicer.io is not watched (is the CRD installed?)"
