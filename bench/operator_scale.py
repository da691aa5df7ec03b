"""Operator cost with many DataJuicerJobs on the real test apiserver (not a test: prints figures).

    .venv/bin/python bench/operator_scale.py [--jobs 200] [--baseline 20] [--interval 10] [--window 60]

For a small batch (the baseline) and then a large one, all on one apiserver, it creates the
jobs, waits until every one has left Pending (the create lag), then over --window seconds of
steady state samples the operator's CPU and RSS and the apiserver's request counter
(apiserver_request_total, so API calls/s), then stops 10 jobs and times until each shows
Stopped (the reaction lag). No kubelet runs, so drivers stay Pending and every job stays
active: the timer visits each of them every --interval seconds, the costliest steady state."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.k8s import LocalCluster, build_binaries, free_port, stop_process, wait_until_healthy  # noqa: E402


def requests_total(cluster: LocalCluster) -> float:
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("apiserver_request_total{"))


def phases(cluster: LocalCluster, ns: str) -> dict[str, str]:
    items = json.loads(cluster.kubectl("-n", ns, "get", "djjobs", "-o", "json").stdout)["items"]
    return {j["metadata"]["name"]: (j.get("status") or {}).get("phase") or "" for j in items}


def job(name: str) -> dict:
    return {"apiVersion": "datajuicer.io/v1alpha1", "kind": "DataJuicerJob", "metadata": {"name": name},
            "spec": {"executorType": "default", "recipe": {"dataset_path": "s3://b/in.jsonl",
                                                            "process": [{"whitespace_normalization_mapper": {}}]}}}


def run_batch(cluster: LocalCluster, proc: psutil.Process, ns: str, n: int, window: float) -> dict[str, float]:
    cluster.kubectl("create", "namespace", ns)
    began = time.monotonic()
    docs = json.dumps({"apiVersion": "v1", "kind": "List", "items": [job(f"j{i}") for i in range(n)]})
    cluster.kubectl("-n", ns, "create", "-f", "-", input=docs)
    while True:
        got = phases(cluster, ns)
        if len(got) == n and all(p not in ("", "Pending") for p in got.values()):
            break
        time.sleep(1)
    create_lag = time.monotonic() - began
    proc.cpu_percent(None)
    before, t0 = requests_total(cluster), time.monotonic()
    rss = []
    while time.monotonic() - t0 < window:
        rss.append(proc.memory_info().rss / 2**20)
        time.sleep(2)
    cpu = proc.cpu_percent(None)
    calls = (requests_total(cluster) - before) / (time.monotonic() - t0)
    lags = []
    for i in range(min(10, n)):
        cluster.kubectl("-n", ns, "patch", "djjob", f"j{i}", "--type", "merge", "-p", '{"spec":{"stop":true}}')
        t = time.monotonic()
        while phases(cluster, ns).get(f"j{i}") != "Stopped":
            time.sleep(0.2)
        lags.append(time.monotonic() - t)
    return {"jobs": n, "create_lag_s": create_lag, "cpu_percent": cpu, "rss_mib": max(rss),
            "api_calls_per_s": calls, "stop_lag_median_s": statistics.median(lags), "stop_lag_max_s": max(lags)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--baseline", type=int, default=20)
    p.add_argument("--interval", type=float, default=10)
    p.add_argument("--window", type=float, default=60)
    args = p.parse_args()
    with LocalCluster(build_binaries(), Path(tempfile.mkdtemp(prefix="dj-scale-"))) as cluster:
        cluster.kubectl("apply", "-f", str(REPO / "crds"))
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "tests" / "data" / "kuberay"))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/datajuicerjobs.datajuicer.io")
        port = free_port()
        log = Path(tempfile.mkdtemp()) / "dj-operator.log"
        cmd = [str(Path(sys.executable).parent / "dj-operator"), "--all-namespaces", "--interval", str(args.interval),
               "--liveness", f"http://127.0.0.1:{port}/healthz"]
        import os
        import subprocess
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
        with log.open("w") as out:
            op = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(op, f"http://127.0.0.1:{port}/healthz", log)
            proc = psutil.Process(op.pid)
            base = run_batch(cluster, proc, "small", args.baseline, args.window)
            big = run_batch(cluster, proc, "large", args.jobs, args.window)  # the small batch stays too
        finally:
            stop_process(op)
    total = args.baseline + args.jobs
    print(f"interval {args.interval:g}s, window {args.window:g}s; active jobs: {args.baseline} then {total}")
    for label, r, n in (("baseline", base, args.baseline), ("large", big, total)):
        print(f"{label:9} {n:4} jobs: create lag {r['create_lag_s']:.1f}s, CPU {r['cpu_percent']:.0f}%, "
              f"RSS {r['rss_mib']:.0f} MiB, API {r['api_calls_per_s']:.1f} calls/s "
              f"({r['api_calls_per_s'] * args.interval / n:.1f} per job per tick), "
              f"stop lag median {r['stop_lag_median_s']:.1f}s max {r['stop_lag_max_s']:.1f}s")
    print(f"ratio large/baseline: jobs {total / args.baseline:.1f}x, CPU {big['cpu_percent'] / max(base['cpu_percent'], 0.1):.1f}x, "
          f"API calls {big['api_calls_per_s'] / max(base['api_calls_per_s'], 0.1):.1f}x, "
          f"stop lag {big['stop_lag_median_s'] / max(base['stop_lag_median_s'], 0.01):.1f}x")


if __name__ == "__main__":
    main()
