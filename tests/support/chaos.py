"""The chaos harness: SIGKILL a job again and again at random moments, resume it, and check exactly-once.

One job (hundreds of partitions, every_n_ops checkpoints, a global deduplicator) runs under
dj-process. At random moments the harness SIGKILLs the driver's process group, or one worker
process, or arms a failpoint that SIGKILLs the job mid-checkpoint-write, mid-export, after an
op, after a partition or inside the global dedup decision. After each driver death it resumes
with the same --job_id, until the kill budget is spent and the job completes. If a job completes
while kills remain, a new job (a new round) starts. Then, per round:

- output == an uninterrupted run's output, byte for byte after sorting by id (`compare`: lost, duplicated);
- the event log accounts for every partition exactly once (`accounting`) and is causal (`late_worker_events`);
- no process that any run started is still alive (orphans).

`chaos()` runs it and returns a `Tally`; bench/chaos.py is its command line (`--kills 50`), and
tests/reliability/test_chaos.py runs it with a handful of kills. The checks are plain functions
over a job's files, for any test that wants to hold a job's output and event log to the same bar."""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import orjson
import psutil
import yaml

from djworker.demo_data import rows as demo_rows
from djworker.progress import progress
from tests.support.artifacts import TORN, JobFiles

REPO = Path(__file__).resolve().parents[2]
OPS = [
    {"clean_links_mapper": {}},
    {"clean_email_mapper": {}},
    {"whitespace_normalization_mapper": {}},
    {"document_deduplicator": {}},
    {"fix_unicode_mapper": {}},
    {"text_length_filter": {"min_len": 20, "max_len": 2000}},
]
TIMED = ("driver", "worker")  # killed by the harness at a random moment
# failpoint -> how many hits one process sees, per remaining partition (a random N up to that kills)
FAILPOINTS = {"checkpoint_mid_write": 4.0, "export_mid_write": None, "op_done": 5.0, "partition_done": 2.0,
              "dedup_decide": None}
KINDS = TIMED + tuple(FAILPOINTS)
WORKER_EVENTS = {"PARTITION_START", "OP_START", "OP_COMPLETE", "OP_FAILED", "CHECKPOINT_SAVE", "CHECKPOINT_LOAD"}


# ---- the job --------------------------------------------------------------------------
def write_input(path: Path, n: int) -> None:
    """The demo corpus, plus exact duplicates of earlier rows (new ids) across partitions,
    so the global deduplicator's decision shapes the output."""
    texts: list[str] = []
    with open(path, "wb") as fh:
        for row in demo_rows(n):
            i = row["id"]
            if i % 9 == 4 and i >= 37:
                row["text"] = texts[i - 37]
            texts.append(row["text"])
            fh.write(orjson.dumps(row) + b"\n")


def write_recipe(root: Path, name: str, executor: str, partitions: int, rows_per_partition: int, np: int,
                 intermediate: Optional[dict[str, str]] = None) -> Path:
    data = root / "input.jsonl"
    if not data.exists():
        write_input(data, partitions * rows_per_partition)
    recipe = {
        "project_name": "chaos", "dataset_path": str(data), "export_path": str(root / "out" / f"{name}.jsonl"),
        "work_dir": str(root / "jobs"), "event_log_dir": str(root / "events"), "checkpoint_dir": str(root / "ckpt"),
        "executor_type": executor, "np": np, "partition": {"size": rows_per_partition},
        "checkpoint": {"strategy": "every_n_ops", "n_ops": 2},
        "retry": {"max_retries": 5, "base_delay_s": 0.05, "max_delay_s": 0.5},
        "process": OPS,
        "intermediate_storage": intermediate or {},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def dj_env(extra: Optional[dict[str, str]] = None, code: Optional[Path] = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DJ_FAILPOINTS", "RAY_ADDRESS")}
    paths = [str(code or REPO / "worker"), str(REPO), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.update(extra or {})
    return env


# ---- watching processes ----------------------------------------------------------------
class Watcher:
    """Records every process in a driver's tree (pid + start time) while it runs."""

    def __init__(self) -> None:
        self.seen: dict[tuple[int, float], str] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def watch(self, pid: int) -> None:
        self.stop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(pid,), daemon=True)
        self._thread.start()

    def _loop(self, pid: int) -> None:
        while not self._stop.is_set():
            self.record(pid)
            self._stop.wait(0.05)

    def record(self, pid: int) -> list[psutil.Process]:
        try:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return []
        for proc in procs:
            try:
                self.seen.setdefault((proc.pid, proc.create_time()), " ".join(proc.cmdline())[:160])
            except psutil.Error:
                pass
        return procs[1:]

    def record_session(self, sid: int) -> None:
        """Also every process still in the driver's session (a Ray worker that moved to its own
        process group while being started escapes the group kill, but not this)."""
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) == sid:
                    self.seen.setdefault((proc.pid, proc.create_time()), " ".join(proc.cmdline())[:160])
            except (psutil.Error, OSError):
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def alive(self) -> dict[int, str]:
        """Recorded processes still running (the same pid *and* start time; zombies are gone)."""
        out = {}
        for (pid, started), cmd in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if abs(proc.create_time() - started) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
                    out[pid] = cmd
            except psutil.Error:
                pass
        return out


def is_worker(proc: psutil.Process, driver: psutil.Process, executor: str) -> bool:
    """A process that runs partitions: a Ray task worker, or a pool worker (forked by the driver,
    so it has the driver's command line, or by a forkserver) but not a helper such as the
    forkserver itself or multiprocessing's resource tracker."""
    try:
        cmd = proc.cmdline()
        if executor == "ray":  # Ray retitles its workers "ray::<task>"; the raylet's argv merely mentions them
            return " ".join(cmd).startswith("ray::") and not " ".join(cmd).startswith("ray::Mailbox")
        if "forkserver" in " ".join(cmd):
            return proc.ppid() != driver.pid
        return cmd == driver.cmdline()
    except psutil.Error:
        return False


# ---- tally -----------------------------------------------------------------------------
@dataclass
class Tally:
    executor: str
    partitions: int
    rows: int
    seed: int = 0
    kills: Counter = field(default_factory=Counter)
    runs: int = 0
    rounds: int = 0
    exits: Counter = field(default_factory=Counter)
    lost: int = 0
    duplicated: int = 0
    mismatched: int = 0
    problems: list[str] = field(default_factory=list)
    late_events: int = 0  # worker events logged after their partition's final PARTITION_COMPLETE
    orphans: dict[int, str] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def total_kills(self) -> int:
        return sum(self.kills.values())

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.mismatched or self.problems or self.orphans
                    or self.late_events)

    def render(self) -> str:
        lines = [
            f"executor {self.executor}: {self.partitions} partitions x {self.rows // max(self.partitions, 1)} rows, "
            f"{self.rounds} round(s), {self.runs} dj-process runs, wall {self.wall_s:.0f}s, seed {self.seed}",
            f"kills: {self.total_kills} (" + ", ".join(f"{k} {v}" for k, v in sorted(self.kills.items())) + ")",
            "run exits: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.exits.items(), key=str)),
            f"lost: {self.lost}  duplicated: {self.duplicated}  mismatched: {self.mismatched}  "
            f"accounting problems: {len(self.problems)}  orphans: {len(self.orphans)}  "
            f"late worker events: {self.late_events}",
        ]
        lines += [f"  problem: {p}" for p in self.problems[:20]]
        lines += [f"  orphan: {pid} {cmd}" for pid, cmd in list(self.orphans.items())[:20]]
        lines.append("RESULT: " + ("OK, exactly once" if self.ok else "FAILED"))
        return "\n".join(lines)


# ---- checks ----------------------------------------------------------------------------
def by_id(path: Path) -> dict[Any, list[bytes]]:
    """Output lines by their row id; a line that is not a JSON row goes under ('unparsable', n)."""
    out: dict[Any, list[bytes]] = {}
    for n, line in enumerate(path.read_bytes().splitlines()):
        try:
            key = orjson.loads(line)["id"] if line else None
        except (orjson.JSONDecodeError, TypeError, KeyError):
            key = ("unparsable", n)
        if key is not None:
            out.setdefault(key, []).append(line)
    return out


def compare(reference: Path, got: Path, tally: Tally) -> None:
    """Byte-for-byte after sorting by id: lost ids, extra copies, and rows whose bytes differ."""
    ref, out = by_id(reference), by_id(got)
    tally.lost += sum(1 for i in ref if i not in out)
    tally.duplicated += sum(len(lines) - 1 for lines in out.values()) + sum(len(v) for i, v in out.items() if i not in ref)
    tally.mismatched += sum(1 for i, lines in out.items() if i in ref and lines[0] != ref[i][0])


def job_files(root: Path, job: str) -> JobFiles:
    """The files of a job run from a write_recipe recipe under root."""
    return JobFiles.of(job, root / "jobs", root / "events", root / "ckpt")


def late_worker_events(evs: list[dict[str, Any]]) -> list[str]:
    """Worker events written after their partition's last-stage PARTITION_COMPLETE in the same run:
    harmless to the fold, but the log should be causal (a partition's own events come first)."""
    late, done = [], set()
    for e in evs:
        if e["event_type"] in ("JOB_START", "JOB_RESUMED"):
            done = set()
        elif e["event_type"] == "PARTITION_COMPLETE" and (e.get("stage") or 0) == (e.get("stages") or 1) - 1:
            done.add(e["partition_id"])
        elif e.get("partition_id") in done and e["event_type"] in WORKER_EVENTS:
            late.append(f"partition {e['partition_id']}: {e['event_type']} written after its PARTITION_COMPLETE")
    return late


def accounting(job: JobFiles, out_rows: int) -> list[str]:
    """What the event log must say after a chaotic job completed (empty list = consistent):
    the final fold has every planned partition completed; no partition's final result was
    accepted (PARTITION_COMPLETE, last stage) twice across all runs; in the last run each
    partition was completed or skipped exactly once; one JOB_COMPLETE, one committed export;
    no torn event line before the last."""
    problems = []
    name = job.job_id
    evs = job.events(torn="mark")
    plan = job.plan()
    if plan is None:
        return [f"{name}: no plan ({job.paths.mapping})"]
    pids = [p["partition_id"] for p in plan["partitions"]]
    fold = progress(evs, plan, time.time()).model_dump()
    o = fold["overall_progress"]
    if o["job_status"] != "completed" or o["partitions"]["completed"] != len(pids) or o["partitions"]["total"] != len(pids):
        problems.append(f"{name}: final fold {o['job_status']} {o['partitions']}")
    last = lambda e: (e.get("stage") or 0) == (e.get("stages") or 1) - 1  # noqa: E731
    completes = Counter(e["partition_id"] for e in evs if e["event_type"] == "PARTITION_COMPLETE" and last(e))
    twice = sorted(p for p, n in completes.items() if n > 1)
    if twice:
        problems.append(f"{name}: partitions completed twice across runs: {twice[:10]}")
    starts = [i for i, e in enumerate(evs) if e["event_type"] in ("JOB_START", "JOB_RESUMED")]
    final = evs[starts[-1]:] if starts else []
    ends = Counter(e["partition_id"] for e in final
                   if e["event_type"] in ("PARTITION_COMPLETE", "PARTITION_SKIPPED") and last(e))
    wrong = sorted(p for p in pids if ends[p] != 1)
    if wrong:
        problems.append(f"{name}: partitions not completed exactly once in the final run: {wrong[:10]}")
    types = [e["event_type"] for e in evs]
    if types.count("JOB_COMPLETE") != 1 or types[-1] != "JOB_COMPLETE":
        problems.append(f"{name}: {types.count('JOB_COMPLETE')} JOB_COMPLETE events, last event {types[-1:]}")
    exports = [e for e in evs if e["event_type"] == "INFO" and e.get("export_path")]
    if len(exports) != 1 or exports[0].get("rows_out") != out_rows:
        problems.append(f"{name}: {len(exports)} committed exports, rows {[e.get('rows_out') for e in exports]} "
                        f"vs {out_rows} in the output")
    if TORN in types[:-1]:
        problems.append(f"{name}: a torn event line in the middle of the log")
    return problems


# ---- the harness -------------------------------------------------------------------------
@dataclass
class Run:
    proc: subprocess.Popen
    started: float
    temp: Optional[str]


class Chaos:
    def __init__(self, root: Path, executor: str, partitions: int, rows_per_partition: int, np: int,
                 seed: int, kinds: tuple[str, ...], first: tuple[str, ...], log: Callable[[str], None],
                 code: Optional[Path] = None, intermediate: Optional[dict[str, str]] = None):
        self.root, self.executor, self.np, self.kinds, self.log, self.code = root, executor, np, kinds, log, code
        self.intermediate = intermediate
        self.rng = random.Random(seed)
        self.first = list(first)  # kinds to use first, in order, until each has landed once
        self.partitions, self.rows_per_partition = partitions, rows_per_partition
        self.recipe = write_recipe(root, "chaos", executor, partitions, rows_per_partition, np, intermediate)
        self.watcher = Watcher()
        self.tally = Tally(executor, partitions, partitions * rows_per_partition, seed)
        self.temps: list[str] = []
        self.clean_s = 30.0
        self.extra_env: dict[str, str] = {}  # for every run (the soak points AWS_ENDPOINT_URL at its proxy)

    def files(self, job: str) -> JobFiles:
        return job_files(self.root, job)

    def start(self, job: str, recipe: Optional[Path] = None, failpoint: Optional[str] = None) -> Run:
        extra = {**self.extra_env, **({"DJ_FAILPOINTS": failpoint} if failpoint else {})}
        temp = None
        if self.executor == "ray":
            temp = tempfile.mkdtemp(prefix="djc-", dir="/tmp")  # Ray's socket paths must stay short
            self.temps.append(temp)
            extra["DJ_RAY_TEMP_DIR"] = temp
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "djworker.cli.process", "--config", str(recipe or self.recipe),
               "--job_id", job, "--quiet"]
        with open(logs / f"{job}.log", "ab") as out:
            proc = subprocess.Popen(cmd, env=dj_env(extra, self.code), stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=self.root)
        self.tally.runs += 1
        self.watcher.watch(proc.pid)
        return Run(proc, time.time(), temp)

    def finish(self, run: Run, timeout: float = 240) -> int:
        try:
            code = run.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            run.proc.send_signal(signal.SIGUSR1)  # dj-process writes its threads' stacks to its log
            time.sleep(2)
            self.tally.problems.append(f"a run did not end within {timeout}s (pid {run.proc.pid}); killed; "
                                       f"its threads' stacks are in {self.root / 'logs'}")
            os.killpg(run.proc.pid, signal.SIGKILL)
            code = run.proc.wait()
        self.watcher.stop()
        self.watcher.record_session(run.proc.pid)
        self.tally.exits[code] += 1
        return code

    # -- one reference run, uninterrupted --
    def reference(self) -> Path:
        recipe = write_recipe(self.root, "reference", self.executor, self.partitions, self.rows_per_partition, self.np,
                              self.intermediate)
        t0 = time.time()
        code = self.finish(self.start("reference", recipe))
        self.tally.runs -= 1  # not a chaos run
        self.tally.exits[code] -= 1
        if code != 0:
            raise RuntimeError(f"the uninterrupted reference run failed ({code}): see {self.root / 'logs'}")
        self.clean_s = time.time() - t0
        self.log(f"reference run: {self.clean_s:.1f}s")
        return self.root / "out" / "reference.jsonl"

    def completed(self, job: str) -> bool:
        """The job's last run recorded JOB_COMPLETE (its output is committed), whatever its exit."""
        ends = [e["event_type"] for e in self.files(job).events(torn="mark") if e["event_type"] in
                ("JOB_START", "JOB_RESUMED", "JOB_COMPLETE", "JOB_FAILED", "JOB_STOPPED")]
        return bool(ends) and ends[-1] == "JOB_COMPLETE"

    def remaining(self, job: str) -> float:
        """Share of the job's partition work still to do (1.0 before planning)."""
        files = self.files(job)
        plan = files.plan()
        if plan is None:
            return 1.0
        fold = progress(files.events(torn="mark"), plan, time.time()).model_dump()
        parts = fold["overall_progress"]["partitions"]
        return max(0.05, 1 - parts["completed"] / max(parts["total"], 1))

    def choose(self, job: str, live: bool) -> str:
        """The next kill: timed kinds only on a live run; no dedup_decide once the decision is saved;
        only export or timed kills once every partition is done."""
        files = self.files(job)
        done = self.remaining(job) <= 0.05 and files.plan() is not None
        ckpt = Path(files.paths.checkpoint_root)
        decided = any(ckpt.glob("dedup_op*.json")) if ckpt.exists() else False
        fits = [k for k in self.kinds if (k in TIMED or not live) and not (k == "dedup_decide" and decided)
                and not (done and k in ("checkpoint_mid_write", "op_done", "partition_done"))]
        wanted = [k for k in self.first if k in fits]  # the first kinds, in order, until each has landed
        return wanted[0] if wanted else self.rng.choice(fits or list(TIMED))

    def landed(self, kind: str) -> None:
        if kind in self.first:
            self.first.remove(kind)

    def failpoint_spec(self, kind: str, job: str) -> str:
        share = self.remaining(job)
        if kind == "dedup_decide":
            n = 1
        elif kind == "export_mid_write":
            n = self.rng.randint(1, self.partitions)
        else:
            # 0.6: a resumed run reuses checkpoints, so it reaches fewer points than the estimate
            per_process = 0.6 * FAILPOINTS[kind] * share * self.partitions / (1 if kind == "partition_done" else self.np)
            n = self.rng.randint(1, max(1, int(per_process)))
        return f"{kind}={n}"

    def timed_kill(self, run: Run, kind: str, job: str) -> bool:
        """Wait a random moment, then SIGKILL the driver's group or one worker. False if the run ended first."""
        # the reference run's wall time includes start-up; aim inside the work that remains
        deadline = time.time() + self.rng.uniform(0.2, max(0.5, 0.6 * self.clean_s * (0.2 + 0.8 * self.remaining(job))))
        while time.time() < deadline:
            if run.proc.poll() is not None:
                return False
            time.sleep(0.02)
        if kind == "driver":
            try:
                os.killpg(run.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                return False
            return True
        give_up = time.time() + max(5.0, self.clean_s)
        try:
            driver = psutil.Process(run.proc.pid)
        except psutil.Error:
            return False
        while time.time() < give_up and run.proc.poll() is None:
            workers = [p for p in self.watcher.record(run.proc.pid) if is_worker(p, driver, self.executor)]
            if workers:
                victim = self.rng.choice(workers)
                try:
                    victim.kill()
                    return True
                except psutil.Error:
                    pass
            time.sleep(0.02)
        return False

    def round(self, job: str, budget: int, reference: Path) -> int:
        """Kill one job up to `budget` times, then let it complete; returns the kills spent."""
        spent, run = 0, None
        while True:
            live = run is not None  # after a worker kill the driver goes on: only a timed kill applies
            kind = self.choose(job, live) if spent < budget else None
            failpoint = self.failpoint_spec(kind, job) if kind in FAILPOINTS else None
            if not live:
                run = self.start(job, failpoint=failpoint)
            if kind in TIMED and self.timed_kill(run, kind, job):
                spent += 1
                self.tally.kills[kind] += 1
                self.landed(kind)
                self.log(f"  {job}: killed the {kind} ({spent}/{budget})")
                if kind == "worker":
                    continue  # the driver retries the partition; keep this run
            code = self.finish(run)
            run = None
            if code == -signal.SIGKILL and failpoint:
                spent += 1
                self.tally.kills[failpoint.split("=")[0]] += 1
                self.landed(failpoint.split("=")[0])
                self.log(f"  {job}: failpoint {failpoint} fired ({spent}/{budget})")
            if code == 0 or self.completed(job):  # a kill can land after JOB_COMPLETE: the job is done
                break
            if code not in (0, -signal.SIGKILL):
                self.log(f"  {job}: run exited {code}; resuming")
        out = self.root / "out" / "chaos.jsonl"
        compare(reference, out, self.tally)
        files = self.files(job)
        self.tally.problems += accounting(files, sum(1 for line in out.read_bytes().splitlines() if line))
        self.tally.late_events += len(late_worker_events(files.events(torn="mark")))
        self.tally.rounds += 1
        kept = self.root / "out" / f"{job}.jsonl"
        shutil.move(str(out), kept)
        return spent

    def cleanup(self) -> None:
        self.watcher.stop()
        for temp in self.temps:
            shutil.rmtree(temp, ignore_errors=True)


def chaos(root: Path, kills: int, executor: str = "local", partitions: int = 300, rows_per_partition: int = 10,
          np: int = 2, seed: int = 0, kinds: tuple[str, ...] = KINDS, first: tuple[str, ...] = (),
          log: Callable[[str], None] = print, code: Optional[Path] = None,
          intermediate: Optional[dict[str, str]] = None) -> Tally:
    """Run the chaos harness under root (a fresh directory); return the tally.

    Orphans are checked last: every process any run started (its tree while it ran, and its
    session after) must be gone, allowing 15 s (90 s on Ray, whose workers notice a dead raylet
    on their own); survivors are reported, then killed."""
    t0 = time.time()
    harness = Chaos(root, executor, partitions, rows_per_partition, np, seed, kinds, first, log, code, intermediate)
    try:
        run_rounds(harness, kills, lambda: harness.tally.total_kills, "chaos", f"kill (kinds {kinds})")
        # Ray workers notice a dead raylet on their own, within about a minute
        reap_orphans(harness, 90 if executor == "ray" else 15)
    finally:
        harness.cleanup()
    harness.tally.wall_s = time.time() - t0
    return harness.tally


def run_rounds(harness: Any, budget: int, landed: Callable[[], int], prefix: str, what: str) -> None:
    """One job per round, each taking faults until `budget` landed in all; 3 rounds in a row with
    none landing (e.g. no process matched is_worker) are reported rather than looped on forever."""
    reference = harness.reference()
    job_no, idle = 0, 0
    while landed() < budget:
        job_no += 1
        idle = 0 if harness.round(f"{prefix}{job_no}", budget - landed(), reference) else idle + 1
        if idle == 3:
            harness.tally.problems.append(f"3 rounds in a row ended before any {what} landed")
            break


def reap_orphans(harness: Any, grace_s: float) -> None:
    """Every process a run started must be gone within grace_s: survivors go in the tally, then die."""
    deadline = time.time() + grace_s
    while (left := harness.watcher.alive()) and time.time() < deadline:
        time.sleep(0.2)
    harness.tally.orphans = left
    for pid in left:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
