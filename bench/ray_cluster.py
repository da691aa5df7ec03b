"""The Ray path as on Kubernetes: both engines on an already-running Ray cluster, side by side.

    .venv/bin/python bench/ray_cluster.py                 # 100k rows
    .venv/bin/python bench/ray_cluster.py --rows 1000000  # the 1.3x-of-local target's size

A head (`ray start --head`, no CPUs of its own, as a KubeRay head with `num-cpus: 0`) and 2
worker nodes of one CPU each, on loopback with token authentication, are started before
any timing, as the operator's RayCluster is up before its driver starts. Then, on one
generated file, the standard recipe (bench/run.py's STANDARD, every_op checkpoints):

- this engine, local executor (2 processes): the baseline of the 1.3x target;
- this engine, `executor_type: ray` on the cluster through Ray Client (`ray://`), as the
  operator's driver pod connects;
- DataJuicer 1.6.1 `ray_partitioned` on the same cluster (`ray_address`: the head's GCS
  address), from its own venv (bench/setup-datajuicer-venv.sh), when --with-datajuicer.

Every ratio is between figures of this one run; outputs are compared for identity."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO), str(REPO / "worker")]

import run as bench  # noqa: E402  (bench/run.py: the recipe, the data and the measuring)
from tests.support.ray import running_ray_head  # noqa: E402


LOCAL = "ours, local executor"
RAY = "ours, ray on the running cluster (ray://)"
DJ = "DataJuicer ray_partitioned on the cluster"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--with-datajuicer", action="store_true")
    ap.add_argument("--dj-python", default=None)
    ap.add_argument("--out", default=str(BENCH / "results" / "ray_cluster.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="djraybench-", dir="/tmp"))
    results: dict[str, dict[str, Any]] = {}
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(16).hex()}
    try:
        data = work / "data.jsonl"
        bench.write_jsonl(str(data), args.rows)
        env = {**os.environ, "PYTHONPATH": str(REPO / "worker"), "DJ_RAY_TEMP_DIR": str(work / "ray")}

        def scenario(name: str, res: dict[str, Any], out: Path) -> None:
            res["rows_per_s"] = args.rows / res["wall_s"]
            res["texts"] = bench.output_texts(out)
            results[name] = res
            print(f"{name:44s} {res['wall_s']:8.2f} s {res['rows_per_s']:10.0f} rows/s", flush=True)

        scenario(LOCAL, bench.dj_process(bench.recipe(work, data, "local"), "l", env),
                 work / "local" / "out.jsonl")
        with running_ray_head(auth, num_cpus=0, workers=2) as head:
            ray_env = {**env, **auth}
            scenario(RAY,
                     bench.dj_process(bench.recipe(work, data, "ray", executor_type="ray", ray_address=head.address),
                                      "r", ray_env), work / "ray" / "out.jsonl")
            if args.with_datajuicer:
                dj = datajuicer(work, data, head.gcs_address, auth, bench.dj_python(args.dj_python))
                scenario(DJ, dj, work / "dj" / "out.jsonl")
        ours = results[LOCAL]["texts"]
        ratios: dict[str, tuple[Any, str]] = {
            "ray on the cluster / local (wall)": (
                results[RAY]["wall_s"] / results[LOCAL]["wall_s"],
                "<= 1.3 (at 1M rows)"),
            "ray output identical to local": (results[RAY]["texts"] == ours, "True"),
        }
        if DJ in results:
            dj = results[DJ]
            ratios["DataJuicer ray_partitioned / ours on the cluster (wall)"] = (
                dj["wall_s"] / results[RAY]["wall_s"], ">= 10")
            ratios["DataJuicer output identical to ours"] = (dj["texts"] == ours, "True")
        print()
        for name, (value, target) in ratios.items():
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            print(f"{name:56s} {shown:>8s}  target {target}")
        for res in results.values():
            res.pop("texts", None)
        report = {"machine": bench.machine_info(), "rows": args.rows, "results": results,
                  "ratios": {k: {"value": v, "target": t} for k, (v, t) in ratios.items()},
                  "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "commit": bench.commit(),
                  "load_average": os.getloadavg(), "args": sys.argv[1:]}
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"\nwritten to {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def datajuicer(work: Path, data: Path, gcs_address: str, auth: dict[str, str], python: str) -> dict[str, Any]:
    """DataJuicer 1.6.1's ray_partitioned on the running cluster, from its own venv."""
    base = work / "dj"
    cfg = {"project_name": "bench_ray_cluster", "dataset_path": str(data), "export_path": str(base / "out.jsonl"),
           "work_dir": str(base / "work"), "executor_type": "ray_partitioned", "ray_address": gcs_address, "np": 2,
           "process": bench.STANDARD, "checkpoint": {"enabled": True, "strategy": "every_op"},
           "partition": {"mode": "manual", "num_of_partitions": 4}}
    path = work / "dj.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RAY_ADDRESS")}
    env.update({**auth, "HF_DATASETS_CACHE": str(base / "hf"), "TMPDIR": str(base / "tmp")})
    (base / "tmp").mkdir(parents=True, exist_ok=True)
    return bench.run_measured([str(Path(python).parent / "dj-process"), "--config", str(path)], env)


if __name__ == "__main__":
    main()
