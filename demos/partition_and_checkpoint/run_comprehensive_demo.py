"""Partitioning, checkpoint strategies, SIGKILL and resume, monitoring: the fault-tolerance
guide's features on the bundled demo corpus, each through the real CLIs.

    .venv/bin/python demos/partition_and_checkpoint/run_comprehensive_demo.py [--work-dir DIR]

1. Runs configs/demo/checkpoint_config_example.yaml once per checkpoint strategy and compares
   the checkpoints written and the wall time; every strategy must give the same output.
2. Starts a job, SIGKILLs its process group once some partitions are done (read from its
   events.jsonl), shows `dj-monitor` and `dj-stop --list`, resumes it with the same --job_id and
   checks the resume's events and that its output equals the uninterrupted run's.

Exits 0 only if every check held, so it doubles as a smoke test. Job ids carry a run stamp, so
running it again in the same --work-dir starts fresh jobs beside the old ones."""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/demo/checkpoint_config_example.yaml"
OPS = 5  # the config's process list
# strategy -> (extra dj-process flags, the ops a partition is checkpointed after, 1-based)
STRATEGIES = {
    "every_op": ([], {1, 2, 3, 4, 5}),
    "every_partition": ([], {5}),
    "every_n_ops": (["--checkpoint.n_ops", "3"], {3}),
    "manual": (["--checkpoint.op_names", "clean_links_mapper,whitespace_normalization_mapper"], {1, 3}),
    "disabled": ([], set()),
}
KILL_PARTITION_SIZE = 20  # 100 partitions of the 2000-row corpus: enough to kill between them
MANIFEST = re.compile(r"checkpoint_partition_(\d+)_op(\d+)_.*\.json")


def cli(name: str) -> list[str]:
    """The console script beside this interpreter, else the repo's venv's, else the module."""
    for script in (Path(sys.executable).parent / name, REPO / ".venv" / "bin" / name):
        if script.exists():
            return [str(script)]
    module = {"dj-process": "process", "dj-monitor": "monitor", "dj-stop": "stop"}[name]
    return [sys.executable, "-m", f"djworker.cli.{module}"]


class Demo:
    def __init__(self, work: Path):
        self.work = work
        self.stamp = time.strftime("%H%M%S") + f"-{os.getpid()}"
        self.checks: list[tuple[str, bool, str]] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append((name, ok, detail))
        return ok

    # ---- paths of one job, as the config lays them out (overridden into the work dir)
    def job_id(self, name: str) -> str:
        return f"{name}-{self.stamp}"

    def process_cmd(self, job_id: str, *extra: str) -> list[str]:
        return [*cli("dj-process"), "--config", CONFIG, "--job_id", job_id, "--quiet",
                "--work_dir", str(self.work / "jobs"), "--event_log_dir", str(self.work / "event_logs"),
                "--checkpoint_dir", str(self.work / "checkpoints"),
                "--export_path", str(self.export(job_id)), *extra]

    def export(self, job_id: str) -> Path:
        return self.work / "exports" / f"{job_id}.jsonl"

    def events(self, job_id: str) -> list[dict]:
        path = self.work / "event_logs" / job_id / "event_logs" / "events.jsonl"
        out = []
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                out.append(json.loads(line))
            except ValueError:  # a line the driver is still writing
                pass
        return out

    def checkpoints(self, job_id: str) -> dict[int, set[int]]:
        """partition -> the op counts it has a checkpoint after (a manifest exists exactly then)."""
        found: dict[int, set[int]] = {}
        root = self.work / "checkpoints" / job_id
        for path in root.iterdir() if root.exists() else []:
            if m := MANIFEST.fullmatch(path.name):
                found.setdefault(int(m[1]), set()).add(int(m[2]))
        return found

    def run(self, cmd: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)

    # ---- 1. one run per strategy
    def strategies(self) -> list[tuple[str, int, float, bool]]:
        print(f"== 1. checkpoint strategies ({CONFIG}, 10 partitions x {OPS} ops)")
        rows, reference = [], None
        for strategy, (flags, after) in STRATEGIES.items():
            job_id = self.job_id(strategy)
            started = time.monotonic()
            done = self.run(self.process_cmd(job_id, "--checkpoint.strategy", strategy, *flags))
            wall = time.monotonic() - started
            if not self.check(f"{strategy}: dj-process exits 0", done.returncode == 0, done.stderr[-500:]):
                continue
            found = self.checkpoints(job_id)
            plan = json.loads((self.work / "jobs" / job_id / "job_summary.json").read_text())["num_partitions"]
            expected = {p: after for p in range(plan)} if after else {}
            self.check(f"{strategy}: checkpoints after ops {sorted(after) or 'none'} of every partition",
                       found == expected, f"found {found}")
            output = self.export(job_id).read_bytes()
            reference = reference if reference is not None else output
            self.check(f"{strategy}: output equals every_op's", output == reference)
            rows.append((strategy, sum(map(len, found.values())), wall, output == reference))
            print(f"   {strategy:16s} {sum(map(len, found.values())):3d} checkpoints  {wall:5.2f} s")
        return rows

    # ---- 2. kill, inspect, resume
    def kill_and_resume(self) -> None:
        job_id = self.job_id("killed")
        flags = ["--partition.size", str(KILL_PARTITION_SIZE)]
        print(f"\n== 2. SIGKILL and resume: {job_id} ({KILL_PARTITION_SIZE} rows per partition)")
        proc = subprocess.Popen(self.process_cmd(job_id, *flags), cwd=REPO, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        done_at_kill = self.kill_when_some_done(proc, job_id)
        killed = self.events(job_id)
        completed = {e["partition_id"] for e in killed if e["event_type"] == "PARTITION_COMPLETE"}
        in_flight = {e["partition_id"] for e in killed if e["event_type"] == "CHECKPOINT_SAVE"} - completed
        print(f"   killed the process group after {done_at_kill} completed partitions; "
              f"{len(in_flight)} more had checkpoints")
        if not self.check("job was killed mid-way", done_at_kill > 0 and proc.returncode == -signal.SIGKILL,
                          f"exit {proc.returncode}"):
            return

        print("\n$ dj-monitor", job_id, "--base-dir", self.work / "jobs")
        shown = self.run([*cli("dj-monitor"), job_id, "--base-dir", str(self.work / "jobs")])
        print(shown.stdout.rstrip())
        status = json.loads(self.run([*cli("dj-monitor"), job_id, "--base-dir", str(self.work / "jobs"), "--json"])
                            .stdout)["overall_progress"]["job_status"]
        self.check("dj-monitor shows the killed job as interrupted", status == "interrupted", status)
        print("\n$ dj-stop --list --base-dir", self.work / "jobs")
        print(self.run([*cli("dj-stop"), "--list", "--base-dir", str(self.work / "jobs")]).stdout.rstrip())
        running = json.loads(self.run([*cli("dj-stop"), "--list", "--json", "--base-dir", str(self.work / "jobs")]).stdout)
        self.check("dj-stop --list: nothing of the killed job still runs", running == [], str(running))

        print(f"\n$ dj-process --config {CONFIG} --job_id {job_id} ...   # the same command resumes")
        started = time.monotonic()
        done = self.run(self.process_cmd(job_id, *flags))
        print(f"   resumed in {time.monotonic() - started:.2f} s: {done.stdout.strip()}")
        if not self.check("resume exits 0", done.returncode == 0, done.stderr[-500:]):
            return
        after = self.events(job_id)[len(killed):]
        counts = Counter(e["event_type"] for e in after)
        print("   resume events: " + ", ".join(f"{k} {counts[k]}" for k in
                                               ("JOB_RESUMED", "PARTITION_SKIPPED", "CHECKPOINT_LOAD", "PARTITION_START")))
        for event in [e for e in after if e["event_type"] == "CHECKPOINT_LOAD"][:2]:
            print(f"     CHECKPOINT_LOAD partition {event['partition_id']}: {event['message']}")
        skipped = {e["partition_id"] for e in after if e["event_type"] == "PARTITION_SKIPPED"}
        loaded = {e["partition_id"] for e in after if e["event_type"] == "CHECKPOINT_LOAD"}
        rerun = {e["partition_id"] for e in after if e["event_type"] == "PARTITION_START"}
        self.check("JOB_RESUMED recorded", counts["JOB_RESUMED"] == 1)
        self.check("every partition completed before the kill is PARTITION_SKIPPED", completed <= skipped,
                   f"not skipped: {sorted(completed - skipped)}")
        self.check("no skipped partition runs again", not skipped & rerun, f"{sorted(skipped & rerun)}")
        self.check("in-flight partitions continue from their checkpoints (CHECKPOINT_LOAD)", in_flight <= skipped | loaded,
                   f"recomputed from scratch: {sorted(in_flight - skipped - loaded)}")
        self.check("resumed output equals the uninterrupted run's",
                   self.export(job_id).read_bytes() == self.export(self.job_id("every_op")).read_bytes())

    def kill_when_some_done(self, proc: subprocess.Popen, job_id: str) -> int:
        """SIGKILL the job's process group once a quarter of its partitions are done and another
        one has a checkpoint; returns how many were done (0 if the job ended first)."""
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            events = self.events(job_id)
            done = {e["partition_id"] for e in events if e["event_type"] == "PARTITION_COMPLETE"}
            saved = {e["partition_id"] for e in events if e["event_type"] == "CHECKPOINT_SAVE"}
            if len(done) >= 2000 // KILL_PARTITION_SIZE // 4 and saved - done:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return len(done)
            time.sleep(0.01)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return 0

    def report(self, rows: list[tuple[str, int, float, bool]]) -> bool:
        print("\n== summary")
        print(f"   {'strategy':16s} {'checkpoints':>11s} {'wall s':>7s}  same output")
        for strategy, n, wall, same in rows:
            print(f"   {strategy:16s} {n:11d} {wall:7.2f}  {'yes' if same else 'NO'}")
        print()
        for name, ok, detail in self.checks:
            print(f"   [{'ok' if ok else 'FAIL'}] {name}" + ("" if ok or not detail else f": {detail}"))
        failed = sum(not ok for _, ok, _ in self.checks)
        print(f"\n{len(self.checks) - failed}/{len(self.checks)} checks held; files under {self.work}")
        return failed == 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", type=Path, default=REPO / "outputs" / "partition-checkpoint-demo",
                   help="where jobs, event logs, checkpoints and exports go (default %(default)s)")
    args = p.parse_args(argv)
    demo = Demo(args.work_dir.resolve())
    rows = demo.strategies()
    demo.kill_and_resume()
    return 0 if demo.report(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
