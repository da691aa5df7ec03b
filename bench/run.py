"""Benchmarks: rows/s, wall and peak RSS per scenario, and ratios against baselines
measured in the same run (never absolute targets in tests: these machines are noisy).

    .venv/bin/python bench/run.py                 # 100k rows, all scenarios except 1M
    .venv/bin/python bench/run.py --big           # also 1M rows (RSS flat, time linear)
    .venv/bin/python bench/run.py --with-datajuicer   # + DataJuicer 1.6.1's default and
                                                      #   ray_partitioned, from its own venv
    .venv/bin/python bench/run.py --with-datajuicer --write-readme-table   # + README's table

DataJuicer runs from the venv bench/setup-datajuicer-venv.sh makes (created on first
use, ~/.cache/datajuicer-ft/dj-bench-venv), never from the project's venv, on the same
generated file and in the same run; every ratio is between figures of this one run.
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
README = REPO / "README.md"
TABLE_START = "<!-- bench-table:start (written by bench/run.py --write-readme-table; do not edit) -->"
TABLE_END = "<!-- bench-table:end -->"


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
    # stderr goes to a file: a chatty child (DataJuicer logs a lot) would block on a full pipe.
    errfile = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=errfile, text=True,
                            start_new_session=True)
    peak, killed = 0, False
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        if kill_when is not None and not killed and kill_when():
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    errfile.seek(0)
    err = errfile.read()
    errfile.close()
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
    saved = checkpointed_fraction(rpath, "r", 16)
    resumed = dj_process(rpath, "r", env)
    scenario(f"full run (16 partitions){tag}", rows, full)
    scenario(f"resume after kill at 75%{tag}", rows, resumed)
    results[f"resume after kill at 75%{tag}"].update(
        killed_at_s=killed["wall_s"], checkpointed_fraction=saved,
        # the work the kill left undone, priced at the full run's rate
        redo_s=(1 - saved) * full["wall_s"])


def checkpointed_fraction(recipe_path: Path, job: str, partitions: int) -> float:
    """Of all (partition, op) steps, the share a killed run had saved: a finished partition
    counts all its ops, an unfinished one the ops up to its last checkpoint."""
    from djworker.config import load_recipe
    from djworker.events import read_events
    from djworker.jobs.paths import JobPaths

    event_dir = JobPaths.of(load_recipe(recipe_path, check_ops=False), job).event_dir
    done: dict[int, int] = {}
    for e in read_events(event_dir):
        pid = e.get("partition_id")
        if e["event_type"] == "PARTITION_COMPLETE":
            done[pid] = len(STANDARD)
        elif e["event_type"] == "CHECKPOINT_SAVE":
            done[pid] = max(done.get(pid, 0), e["op_idx"] + 1)
    return sum(done.values()) / (partitions * len(STANDARD))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--big", action="store_true", help="also run 1M rows")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--with-datajuicer", action="store_true",
                    help="also run DataJuicer 1.6.1 (default and ray_partitioned) from its own venv")
    ap.add_argument("--dj-python", default=None,
                    help="python of an existing DataJuicer 1.6.1 venv (default: bench/setup-datajuicer-venv.sh's)")
    ap.add_argument("--write-readme-table", action="store_true",
                    help="rewrite README.md's benchmark table from this run's results")
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
            results.update(run_datajuicer(work, data, dj_python(args.dj_python), results))

        ratios = compute_ratios(results, same, args.big)
        print()
        for name, (value, target) in ratios.items():
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            print(f"{name:62s} {shown:>8s}  target {target}")
        report = {"machine": machine_info(), "rows": args.rows, "results": results,
                  "ratios": {k: {"value": v, "target": t} for k, (v, t) in ratios.items()},
                  "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "commit": commit(),
                  "load_average": os.getloadavg(), "args": sys.argv[1:]}
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"\nwritten to {out}")
        if args.write_readme_table:
            write_readme_table(report)
            print(f"README table rewritten from this run ({README})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def dj_python(explicit: Optional[str]) -> str:
    """DataJuicer's own venv: the one given, or bench/setup-datajuicer-venv.sh's (made if missing)."""
    if explicit:
        return explicit
    setup = REPO / "bench" / "setup-datajuicer-venv.sh"
    done = subprocess.run([str(setup)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{setup} failed ({done.returncode}); fix it or pass --dj-python:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def output_texts(path: Path) -> Optional[list[str]]:
    """The sorted texts of a JSON-lines export (a file or a directory of them), or None."""
    files = sorted(path.rglob("*.json*")) if path.is_dir() else [path] if path.exists() else []
    if not files:
        return None
    texts = []
    for f in files:
        with open(f, "rb") as fh:
            texts += [json.loads(line)["text"] for line in fh if line.strip()]
    return sorted(texts)


def run_datajuicer(work: Path, data: Path, python: str, results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """DataJuicer 1.6.1's `default` and `ray_partitioned` executors, from their own venv, on
    the same file and recipe: 2 processes, and for ray_partitioned 4 partitions with
    every_op checkpoints, like the `local every_op` scenario."""
    ours = output_texts(work / "every_op" / "out.jsonl")
    out: dict[str, dict[str, Any]] = {}
    for executor in ("default", "ray_partitioned"):
        base = work / f"dj_{executor}"
        cfg: dict[str, Any] = {"project_name": f"bench_{executor}", "dataset_path": str(data),
                               "export_path": str(base / "out.jsonl"), "work_dir": str(base / "work"),
                               "executor_type": executor, "np": 2, "process": STANDARD}
        if executor == "ray_partitioned":
            cfg.update({"checkpoint": {"enabled": True, "strategy": "every_op"},
                        "partition": {"mode": "manual", "num_of_partitions": 4}})
        path = work / f"dj_{executor}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        # A clean environment: nothing of this project's venv or PYTHONPATH leaks in.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RAY_ADDRESS")}
        env.update({"HF_DATASETS_CACHE": str(base / "hf"), "RAY_TMPDIR": str(work / "dj_ray"),
                    "TMPDIR": str(base / "tmp")})
        (base / "tmp").mkdir(parents=True, exist_ok=True)
        dj_process = str(Path(python).parent / "dj-process")
        res = run_measured([dj_process, "--config", str(path)], env)
        res["rows"] = count_rows(data)
        res["rows_per_s"] = res["rows"] / res["wall_s"]
        texts = output_texts(base / "out.jsonl")
        res["rows_out"] = None if texts is None else len(texts)
        res["output_identical_to_ours"] = None if texts is None or ours is None else texts == ours
        out[f"datajuicer {executor}"] = res
        print(f"{'datajuicer ' + executor:28s} {res['wall_s']:8.2f} s {res['rows_per_s']:10.0f} rows/s"
              f"  peak RSS {res['peak_rss_mb']:.0f} MB  same output as ours: {res['output_identical_to_ours']}",
              flush=True)
    return out


def compute_ratios(results: dict[str, Any], same: bool, big: bool) -> dict[str, tuple[Any, str]]:
    """Every ratio with its target; all from figures of this run."""
    r = results
    wall = lambda name: r[name]["wall_s"]  # noqa: E731
    ratios: dict[str, tuple[Any, str]] = {}
    if "datajuicer ray_partitioned" in r:
        ratios["every_op vs DataJuicer ray_partitioned (DJ wall / our wall)"] = (
            wall("datajuicer ray_partitioned") / wall("local every_op"), ">= 10")
        ratios["200-row every_op vs DataJuicer ray_partitioned"] = (
            wall("datajuicer ray_partitioned") / wall("every_op, 200-row partitions"), "(none)")
        ratios["DataJuicer ray_partitioned output identical to ours"] = (
            r["datajuicer ray_partitioned"]["output_identical_to_ours"], "True")
    if "datajuicer default" in r:
        ratios["every_op vs DataJuicer default (DJ wall / our wall)"] = (
            wall("datajuicer default") / wall("local every_op"), "(none)")
        ratios["DataJuicer default output identical to ours"] = (r["datajuicer default"]["output_identical_to_ours"], "True")
    ratios["framework overhead (every_op wall / floor wall)"] = (wall("local every_op") / wall("floor (no framework)"), "<= 1.15")
    ratios["checkpoint cost (every_op / disabled)"] = (wall("local every_op") / wall("local disabled"), "<= 1.10")
    ratios["checkpoint cost at 200-row partitions (every_op / disabled)"] = (
        wall("every_op, 200-row partitions") / wall("disabled, 200-row partitions"), "<= 1.25")
    ratios["resume cost (resume wall / full wall)"] = (
        wall("resume after kill at 75%") / wall("full run (16 partitions)"), "<= 0.25 (see README)")
    redo = lambda tag: wall(f"resume after kill at 75%{tag}") - r[f"resume after kill at 75%{tag}"]["redo_s"]  # noqa: E731
    ratios["resume wall - work not checkpointed (s)"] = (redo(""), "<= 1.0")
    ratios["output rows identical to floor"] = (same, "True")
    if big:
        ratios["resume cost at 1M rows"] = (wall("resume after kill at 75% 1M") / wall("full run (16 partitions) 1M"), "<= 0.25")
        ratios["resume wall - work not checkpointed at 1M rows (s)"] = (redo(" 1M"), "<= 1.0")
        ratios["RSS 1M / 100k"] = (r["local every_op 1M"]["peak_rss_mb"] / r["local every_op"]["peak_rss_mb"], "<= 1.5")
        ratios["time 1M / (10 x 100k)"] = (wall("local every_op 1M") / (10 * wall("local every_op")), "~1 (linear)")
    return ratios


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
            "platform": platform.platform(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)}


def commit() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return head + ("+uncommitted" if git("status", "--porcelain", "--untracked-files=no") else "")


def readme_table(report: dict[str, Any]) -> str:
    """The README's benchmark block, from one run's report."""
    m = report["machine"]
    load = ", ".join(f"{x:.1f}" for x in report["load_average"])
    lines = [TABLE_START, "",
             f"Run {report['when']} at commit `{report['commit']}` on {m['nproc']} x {m['cpu']}, "
             f"{m['memory_gb']} GiB, Python {m['python']}; load average at the end {load}; "
             f"`bench/run.py {' '.join(report['args'])}`, {report['rows']:,} rows.", "",
             "| scenario | wall | rows/s | peak RSS |", "| --- | --- | --- | --- |"]
    for name, res in report["results"].items():
        rss = f"{res['peak_rss_mb']:.0f} MB" if res.get("peak_rss_mb") else "-"
        lines.append(f"| {name} | {res['wall_s']:.2f} s | {res['rows_per_s']:,.0f} | {rss} |")
    lines += ["", "| ratio (this run) | value | target |", "| --- | --- | --- |"]
    for name, item in report["ratios"].items():
        value = item["value"]
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        lines.append(f"| {name} | {shown} | {item['target']} |")
    lines += ["", TABLE_END]
    return "\n".join(lines)


def write_readme_table(report: dict[str, Any]) -> None:
    text = README.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        raise SystemExit(f"README.md has no {TABLE_START!r} ... {TABLE_END!r} block to rewrite")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    README.write_text(head + readme_table(report) + tail)


if __name__ == "__main__":
    main()
