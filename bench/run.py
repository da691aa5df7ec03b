"""Benchmarks: rows/s, wall and peak RSS per scenario, and ratios against baselines
measured in the same run (never absolute targets in tests: these machines are noisy).

    .venv/bin/python bench/run.py                 # 100k rows, all scenarios except 1M
    .venv/bin/python bench/run.py --big           # also 1M rows (RSS flat, time linear)
    .venv/bin/python bench/run.py --with-datajuicer   # DataJuicer side by side, if installed

Results go to stdout and to bench/results/latest.json."""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "worker"))

from djworker.demo_data import write_jsonl  # noqa: E402

STANDARD = [
    {"clean_links_mapper": {}},
    {"clean_email_mapper": {}},
    {"whitespace_normalization_mapper": {}},
    {"fix_unicode_mapper": {}},
    {"text_length_filter": {"min_len": 100, "max_len": 600}},
]
DJ_RAY_PARTITIONED_ROWS_S = 2032  # DataJuicer 1.6.1 ray_partitioned, 100k rows, every_op, 4 partitions, 2 cores
DJ_DEFAULT_ROWS_S = 3380


def tree_rss(pid: int) -> int:
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_measured(cmd: list[str], env: dict[str, str], kill_when: Optional[Any] = None) -> dict[str, Any]:
    """Run a command; sample its process tree's total RSS; optionally SIGKILL it when kill_when() says so."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    peak, killed = 0, False
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        if kill_when is not None and not killed and kill_when():
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0 and not killed:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": peak / 2**20, "returncode": proc.returncode}


def recipe(work: Path, data: Path, name: str, **over: Any) -> Path:
    r: dict[str, Any] = {
        "dataset_path": str(data), "export_path": str(work / name / "out.jsonl"),
        "work_dir": str(work / name / "jobs"), "np": 2, "partition": {"size": 25000},
        "checkpoint": {"strategy": "every_op"}, "process": STANDARD,
    }
    r.update(over)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


def dj_process(path: Path, job: str, env: dict[str, str], kill_when: Any = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "djworker.cli.process", "--config", str(path), "--job_id", job, "--quiet"]
    return run_measured(cmd, env, kill_when)


def count_rows(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def _floor_worker(args: tuple[str, int, int]) -> int:
    """The same ops applied in-process to Arrow data, no framework: the physical floor."""
    import pyarrow.json as pj

    import djworker.ops._load_all  # noqa: F401
    from djworker.ops import build_op

    path, part, parts = args
    table = pj.read_json(path)
    n = table.num_rows
    table = table.slice(part * n // parts, (part + 1) * n // parts - part * n // parts)
    ops = [build_op(name, a, "bench") for op in STANDARD for name, a in op.items()]
    for op in ops:
        table = op.process(table)
    return table.num_rows


def floor(data: Path, np_: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(np_) as pool:
        rows_out = sum(pool.map(_floor_worker, [(str(data), i, np_) for i in range(np_)]))
    return {"wall_s": time.perf_counter() - t0, "rows_out": rows_out, "peak_rss_mb": None}


def events_done(recipe_path: Path, job: str, fraction: float, total: int) -> Any:
    """True once the job's event log shows `fraction` of its `total` partitions completed."""
    from djworker.config import load_recipe
    from djworker.events import read_events
    from djworker.jobs.paths import JobPaths

    event_dir = JobPaths.of(load_recipe(recipe_path, check_ops=False), job).event_dir

    def check() -> bool:
        try:
            done = sum(e["event_type"] == "PARTITION_COMPLETE" for e in read_events(event_dir))
        except FileNotFoundError:  # rotated between listing and opening: ask again
            return False
        return done >= fraction * total
    return check


def resume_scenario(work: Path, data: Path, rows: int, env: dict[str, str], scenario: Any,
                    results: dict[str, Any], tag: str) -> None:
    """A full run, and a run SIGKILLed once 75 % of its 16 partitions completed, then resumed."""
    size = max(rows // 16, 1)
    name = f"resume{tag.strip()}"
    full = dj_process(recipe(work, data, name + "_full", partition={"size": size}), "f", env)
    rpath = recipe(work, data, name, partition={"size": size})
    killed = dj_process(rpath, "r", env, kill_when=events_done(rpath, "r", 0.75, 16))
    resumed = dj_process(rpath, "r", env)
    scenario(f"full run (16 partitions){tag}", rows, full)
    scenario(f"resume after kill at 75%{tag}", rows, resumed)
    results[f"resume after kill at 75%{tag}"]["killed_at_s"] = killed["wall_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--big", action="store_true", help="also run 1M rows")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--with-datajuicer", action="store_true")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "latest.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="djbench-"))
    env = {**os.environ, "PYTHONPATH": str(REPO / "worker"), "DJ_RAY_TEMP_DIR": str(work / "ray")}
    results: dict[str, dict[str, Any]] = {}
    try:
        data = work / "data.jsonl"
        write_jsonl(str(data), args.rows)
        small = work / "small.jsonl"
        write_jsonl(str(small), 1000)

        def scenario(name: str, rows: int, res: dict[str, Any]) -> None:
            res["rows"] = rows
            res["rows_per_s"] = rows / res["wall_s"]
            results[name] = res
            rss = f"{res['peak_rss_mb']:.0f} MB" if res.get("peak_rss_mb") else "-"
            print(f"{name:28s} {res['wall_s']:8.2f} s {res['rows_per_s']:10.0f} rows/s  peak RSS {rss}", flush=True)

        scenario("floor (no framework)", args.rows, floor(data, 2))
        scenario("startup (1k rows)", 1000, dj_process(recipe(work, small, "startup", partition={"size": 500}), "s", env))
        scenario("local every_op", args.rows, dj_process(recipe(work, data, "every_op"), "a", env))
        scenario("local disabled", args.rows, dj_process(recipe(work, data, "disabled", checkpoint={"strategy": "disabled"}), "b", env))
        scenario("local every_partition", args.rows,
                 dj_process(recipe(work, data, "every_partition", checkpoint={"strategy": "every_partition"}), "c", env))
        # The production range of DataJuicer's fault-tolerance guide (100-300 rows per partition):
        # per-partition costs show here.
        scenario("every_op, 200-row partitions", args.rows,
                 dj_process(recipe(work, data, "small_every_op", partition={"size": 200}), "p", env))
        scenario("disabled, 200-row partitions", args.rows,
                 dj_process(recipe(work, data, "small_disabled", partition={"size": 200},
                                   checkpoint={"strategy": "disabled"}), "q", env))
        rows_out = count_rows(work / "every_op" / "out.jsonl")
        results["local every_op"]["rows_out"] = rows_out
        same = rows_out == results["floor (no framework)"]["rows_out"]

        resume_scenario(work, data, args.rows, env, scenario, results, "")

        if not args.skip_ray:
            scenario("ray every_op", args.rows, dj_process(recipe(work, data, "ray", executor_type="ray"), "y", env))
        if args.big:
            big = work / "big.jsonl"
            write_jsonl(str(big), 1_000_000)
            scenario("local every_op 1M", 1_000_000, dj_process(recipe(work, big, "big"), "g", env))
            resume_scenario(work, big, 1_000_000, env, scenario, results, " 1M")
        if args.with_datajuicer:
            results.update(run_datajuicer(work, data, env))

        ratios = {
            "every_op vs DataJuicer ray_partitioned (x)": results["local every_op"]["rows_per_s"] / DJ_RAY_PARTITIONED_ROWS_S,
            "every_op vs DataJuicer default (x)": results["local every_op"]["rows_per_s"] / DJ_DEFAULT_ROWS_S,
            "framework overhead (every_op wall / floor wall)": results["local every_op"]["wall_s"] / results["floor (no framework)"]["wall_s"],
            "checkpoint cost (every_op / disabled)": results["local every_op"]["wall_s"] / results["local disabled"]["wall_s"],
            "checkpoint cost at 200-row partitions": results["every_op, 200-row partitions"]["wall_s"]
            / results["disabled, 200-row partitions"]["wall_s"],
            "every_op, 200-row partitions vs DataJuicer ray_partitioned (x)":
                results["every_op, 200-row partitions"]["rows_per_s"] / DJ_RAY_PARTITIONED_ROWS_S,
            "resume cost (resume wall / full wall)": results["resume after kill at 75%"]["wall_s"] / results["full run (16 partitions)"]["wall_s"],
            "output rows identical to floor": same,
        }
        if args.big:
            ratios["resume cost at 1M rows"] = results["resume after kill at 75% 1M"]["wall_s"] / results["full run (16 partitions) 1M"]["wall_s"]
            ratios["RSS 1M / 100k"] = results["local every_op 1M"]["peak_rss_mb"] / results["local every_op"]["peak_rss_mb"]
            ratios["time 1M / (10 x 100k)"] = results["local every_op 1M"]["wall_s"] / (10 * results["local every_op"]["wall_s"])
        print()
        for k, v in ratios.items():
            print(f"{k:52s} {v:.3f}" if isinstance(v, float) else f"{k:52s} {v}")
        machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                   "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)}
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"machine": machine, "rows": args.rows, "results": results, "ratios": ratios,
                                   "when": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2))
        print(f"\nwritten to {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_datajuicer(work: Path, data: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """DataJuicer's own executors on the same data, when py-data-juicer is installed."""
    try:
        import data_juicer  # noqa: F401
    except ImportError:
        print("py-data-juicer is not installed: skipping --with-datajuicer")
        return {}
    out: dict[str, dict[str, Any]] = {}
    for executor in ("default", "ray_partitioned"):
        cfg = {"project_name": "bench", "dataset_path": str(data), "export_path": str(work / f"dj_{executor}" / "out.jsonl"),
               "executor_type": executor, "np": 2, "process": STANDARD}
        if executor == "ray_partitioned":
            cfg.update({"checkpoint": {"enabled": True, "strategy": "every_op"}, "partition": {"size": 25000}})
        path = work / f"dj_{executor}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        res = run_measured([sys.executable, "-m", "data_juicer.tools.process_data", "--config", str(path)], env)
        res["rows"] = count_rows(data)
        res["rows_per_s"] = res["rows"] / res["wall_s"]
        out[f"datajuicer {executor}"] = res
        print(f"datajuicer {executor:18s} {res['wall_s']:8.2f} s {res['rows_per_s']:10.0f} rows/s", flush=True)
    return out


if __name__ == "__main__":
    main()
