"""The operator's Prometheus metrics: the pure fold, and a real scrape of a running operator."""
from __future__ import annotations

import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from djoperator.metrics import JobTrack, OperatorMetrics, fold

from tests.support.wait import wait_for

from .factories import NOW
from .helpers import Kubectl, job_manifest, upload_dataset


def test_phase_seconds_add_up_across_transitions():
    t = fold(JobTrack(), {"phase": "Pending", "lastTransitionTime": "2026-01-02T03:04:00Z", "attempt": 1}, NOW)
    assert t.seconds == {"Pending": 5.0}  # first sight counts from the phase's transition
    fold(t, {"phase": "Running", "attempt": 1, "partitions": {"completed": 1, "total": 4},
             "samples": {"processed": 10}}, NOW + timedelta(seconds=2))
    fold(t, {"phase": "Running", "attempt": 2}, NOW + timedelta(seconds=12))
    assert t.seconds == {"Pending": 7.0, "Running": 10.0}
    assert (t.phase, t.attempt, t.partitions_total) == ("Running", 2, 0)


def parse(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def scrape_registry(m: OperatorMetrics) -> dict[str, list]:
    from prometheus_client import generate_latest
    return parse(generate_latest(m.registry).decode())


def test_jobs_by_phase_and_a_forgotten_job_leaves_no_series():
    m = OperatorMetrics()
    m.reconciled("ns", "a", {"phase": "Running", "attempt": 1}, NOW, poll_failed=True)
    m.reconciled("ns", "b", {"phase": "Running", "attempt": 1}, NOW, poll_failed=False)
    m.reconciled("ns", "c", {"phase": "Failed", "attempt": 3}, NOW, poll_failed=False)
    got = scrape_registry(m)
    by_phase = {s.labels["phase"]: s.value for s in got["datajuicer_jobs"]}
    assert by_phase["Running"] == 2 and by_phase["Failed"] == 1 and by_phase["Succeeded"] == 0
    assert [s.value for s in got["datajuicer_operator_progress_poll_failures"]
            if s.name.endswith("_total")] == [1.0]
    m.forget("ns", "a")
    got = scrape_registry(m)
    assert {s.labels["name"] for s in got["datajuicer_job_attempt"]} == {"b", "c"}
    assert not [s for s in got["datajuicer_operator_progress_poll_failures"] if s.name.endswith("_total")]


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.mark.k8s
@pytest.mark.s3
def test_a_running_operator_serves_metrics_a_prometheus_parser_reads(kube_cluster, job_namespace, s3_env, s3_bucket,
                                                                      s3_secret, dj_operator, node_agent):
    base = f"http://127.0.0.1:{dj_operator.metrics_port}"
    assert fetch(f"{base}/readyz") == (200, "ok\n")  # watches run: the fixture's operator is up
    kc = Kubectl(kube_cluster, job_namespace)
    upload_dataset(s3_env, s3_bucket, 80)
    kc.apply(job_manifest("metered", s3_bucket, s3_env["AWS_ENDPOINT_URL"], rows_per_partition=40, slow=0.5))
    wait_for(lambda: kc.phase("metered") in ("Succeeded", "Failed"), 120, "the job to finish",
             lambda: f"{kc.status('metered')}\n{dj_operator.tail()}")
    assert kc.phase("metered") == "Succeeded"

    def scraped():
        code, text = fetch(f"{base}/metrics")
        assert code == 200
        got = parse(text)
        mine = {s.name: s for name in ("datajuicer_job_partitions_completed", "datajuicer_job_partitions_total",
                                       "datajuicer_job_attempt", "datajuicer_job_samples_processed")
                for s in got[name] if s.labels == {"namespace": job_namespace, "name": "metered"}}
        return (got, mine) if mine.get("datajuicer_job_partitions_completed") and \
            mine["datajuicer_job_partitions_completed"].value == 2 else None

    got, mine = wait_for(scraped, 30, "the finished job in /metrics")
    assert mine["datajuicer_job_partitions_total"].value == 2 and mine["datajuicer_job_attempt"].value == 1
    assert mine["datajuicer_job_samples_processed"].value == 80
    phases = {s.labels["phase"]: s.value for s in got["datajuicer_job_phase_seconds"]
              if s.labels["name"] == "metered" and s.labels["namespace"] == job_namespace}
    assert phases.get("Running", 0) > 0 and set(phases) <= {"Pending", "Provisioning", "Running", "Succeeded"}
    assert {s.labels["phase"]: s.value for s in got["datajuicer_jobs"]}["Succeeded"] >= 1
    count = [s.value for s in got["datajuicer_operator_reconcile_duration_seconds"] if s.name.endswith("_count")]
    assert count and count[0] > 0
    assert fetch(f"{base}/nothing")[0] == 404


def test_readiness_says_what_it_still_waits_for():
    from djoperator.main import Readiness

    r = Readiness()
    assert r.missing() == "kopf is starting"
    r.started.set()
    assert r.missing() == "resources are being discovered"
