"""The soak: one long job on a Ray cluster with its checkpoints and export on S3, faults of
several kinds drawn at random and injected mid-run, the job resumed (same --job_id) after each
until it completes, then held to chaos.py's exactly-once bar.

The world it builds under `root`:

- moto's S3 server in this process, and tests/support/faulty_s3.py's proxy in front of it: every
  dj-process run (driver and Ray workers) talks to S3 through the proxy; the harness reads
  through moto directly, so its own checks never see a fault;
- with the Ray executor, a cluster of one head and `workers` worker nodes, each a
  `ray start --block` in its own process group (never `ray stop`: other Rays on this machine
  are not ours); the driver attaches to it through RAY_ADDRESS;
- with `enospc` among the faults, the event log on a 64 MiB tmpfs (needs root to mount).

One fault per run, drawn with the seeded `random.Random` (the draws are printed):

- `kill`: a chaos kill (SIGKILL the driver's group, one Ray task worker, or a failpoint); healed by
  the resume;
- `s3`: a burst (30 % of requests refused, reset or slowed for 2-5 s), or an outage (100 % refused
  or reset for 20-60 s: the run exits with its storage code, or rides it out); then rate 0, resume;
- `ray-node`: SIGKILL one worker node (raylet, agents, workers) mid-job; a new node joins;
- `enospc`: the event log's tmpfs filled to the last byte for 2-5 s; the run keeps going (the
  policy), and since its log is incomplete a resume writes it in full;
- `ray-head`: SIGKILL the head (GCS); the driver must exit with the engine's ClusterLost code;
  a new cluster, and the resume on it.

`ray-head` needs the engine's head-loss detection (`djworker.errors.ClusterLost`); on a commit
without it, asking for it is an error that says so.

`soak()` returns a SoakTally; bench/chaos.py `--faults` is its command line and
tests/reliability/test_soak.py runs a handful of faults."""
from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import psutil
import yaml

from tests.support.artifacts import JobFiles
from tests.support.chaos import (FAILPOINTS, REPO, TIMED, Chaos, Run, Tally, accounting, compare, late_worker_events,
                                 reap_orphans, run_rounds)
from tests.support.faulty_s3 import FaultPlan, FaultyS3
from tests.support.k8s import free_port

FAULTS = ("kill", "s3", "ray-node", "enospc", "ray-head")
RAY_FAULTS = ("ray-node", "ray-head")
S3_KEYS = {"AWS_ACCESS_KEY_ID": "dj-soak-access-key", "AWS_SECRET_ACCESS_KEY": "dj-soak-secret"}
EVENTS_TMPFS = "64m"
BURST = (0.3, (2.0, 5.0))  # rate, seconds
OUTAGE_KINDS = ("slowdown", "internal", "reset")
OUTAGE_S = (20.0, 60.0)
STORAGE_EXITS = (5, 6)  # StorageUnavailable, PartitionFailed (its partitions' storage errors exhausted their retries)


class FaultUnavailable(ValueError):
    """A fault that this commit's engine cannot take yet."""


def head_loss_exit_code() -> Optional[int]:
    """The engine's exit code for a lost Ray cluster, or None on a commit without head-loss detection."""
    from djworker import errors

    return getattr(getattr(errors, "ClusterLost", None), "exit_code", None)


def check_faults(faults: tuple[str, ...]) -> None:
    unknown = set(faults) - set(FAULTS)
    if unknown or not faults:
        raise ValueError(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
    if "ray-head" in faults and head_loss_exit_code() is None:
        raise FaultUnavailable("ray-head: not available yet: this engine has no head-loss detection "
                               "(djworker.errors.ClusterLost), so a driver that loses its head has no "
                               "defined exit to resume from; leave it out of --faults")


# ---- a Ray cluster of process groups ----------------------------------------------------------
class RayNodes:
    """One head and worker nodes on this machine, each `ray start --block` in its own process group.

    Nodes start one after another: on a loaded machine a raylet that registers late makes
    `ray start` give up after its fixed 30 s, so a failed start is retried."""

    def __init__(self, workers: int, env: dict[str, str]):
        import ray

        self.ip = ray.util.get_node_ip_address()
        self.env, self.workers = env, workers
        self.temp = tempfile.mkdtemp(prefix="djs-", dir="/tmp")  # Ray's socket paths must stay short
        self.head: Optional[subprocess.Popen] = None
        self.nodes: list[subprocess.Popen] = []
        self.gone: list[int] = []  # pids of every process a removed node had
        self.address = ""

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        for attempt in range(3):
            log = Path(self.temp) / f"{name}.{attempt}.out"
            cmd = [str(Path(sys.executable).parent / "ray"), "start", "--block", "--num-cpus=1",
                   "--object-store-memory=150000000", "--disable-usage-stats",
                   f"--dashboard-agent-listen-port={free_port()}", *args]
            with open(log, "wb") as out:
                proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.time() + 120
            while time.time() < deadline and proc.poll() is None:
                if "Ray runtime started" in log.read_text(errors="replace"):
                    return proc
                time.sleep(0.5)
            self._kill(proc)
        raise RuntimeError(f"a Ray node did not start three times: see {self.temp}")

    def start(self) -> "RayNodes":
        gcs = free_port()
        self.head = self._start(["--head", f"--port={gcs}", f"--temp-dir={self.temp}", "--include-dashboard=false",
                                 f"--ray-client-server-port={free_port()}"], "head")
        self.address = f"{self.ip}:{gcs}"
        for _ in range(self.workers):
            self.add_node()
        return self

    def add_node(self) -> None:
        self.nodes.append(self._start([f"--address={self.address}"], f"node{len(self.nodes) + len(self.gone)}"))

    def remove_node(self, rng: random.Random) -> None:
        """SIGKILL one worker node's whole tree: a machine lost, not drained."""
        victim = self.nodes.pop(rng.randrange(len(self.nodes)))
        self.gone.append(victim.pid)
        self._kill(victim)

    @staticmethod
    def _tree(proc: subprocess.Popen) -> list[psutil.Process]:
        """The node's processes: its group, and their descendants (Ray's workers take sessions of their own)."""
        found: dict[int, psutil.Process] = {}
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) == proc.pid:
                    found.update({c.pid: c for c in [p, *p.children(recursive=True)]})
            except (ProcessLookupError, psutil.Error):
                pass
        return list(found.values())

    def _kill(self, proc: subprocess.Popen) -> None:
        for p in self._tree(proc):
            with contextlib.suppress(psutil.Error):
                p.kill()
        proc.wait()

    def task_workers(self) -> list[psutil.Process]:
        """Ray workers running one of the job's partitions, on any node."""
        out = []
        for node in [self.head, *self.nodes]:
            for p in self._tree(node) if node is not None else []:
                with contextlib.suppress(psutil.Error):
                    if " ".join(p.cmdline()).startswith("ray::_remote_run"):
                        out.append(p)
        return out

    def kill_head(self) -> None:
        """The ray-head hook: the head node's whole tree (GCS included) SIGKILLed; the worker
        nodes go too (they cannot rejoin a new head), and a new cluster is started."""
        for node in [*self.nodes, self.head]:
            if node is not None:
                self._kill(node)
        self.nodes, self.head = [], None
        self.start()

    def stop(self) -> None:
        for node in [*self.nodes, self.head]:
            if node is not None and node.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.pid, signal.SIGTERM)
        deadline = time.time() + 20
        for node in [*self.nodes, self.head]:
            if node is not None:
                try:
                    node.wait(timeout=max(1.0, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    pass
                self._kill(node)
        shutil.rmtree(self.temp, ignore_errors=True)


# ---- the world: S3 behind the proxy, a cluster, a tmpfs ---------------------------------------
@dataclass
class World:
    moto: str
    proxy: FaultyS3
    bucket: str
    events_dir: Path
    tmpfs: bool
    ray: Optional[RayNodes]


@contextlib.contextmanager
def world(root: Path, faults: tuple[str, ...], executor: str, workers: int, seed: int,
          code: Optional[Path]) -> Iterator[World]:
    from moto.server import ThreadedMotoServer
    import s3fs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", *S3_KEYS)}
    os.environ.update({"AWS_ENDPOINT_URL": moto, **S3_KEYS})  # the harness's own reads: no faults
    proxy = FaultyS3(moto, FaultPlan(0.0, latency_s=(0.2, 2.0)), seed=seed).start()
    bucket = f"dj-soak-{uuid.uuid4().hex[:8]}"
    events_dir, mounted, nodes = root / "events", False, None
    try:
        s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto}, skip_instance_cache=True).mkdir(bucket)
        events_dir.mkdir(parents=True, exist_ok=True)
        if "enospc" in faults:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={EVENTS_TMPFS}", "tmpfs", str(events_dir)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"enospc needs a tmpfs for the event log (mount needs root): {done.stderr.strip()}")
            mounted = True
        if executor == "ray":
            env = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin:/bin"]), "LANG": "C.UTF-8",
                   "RAY_USAGE_STATS_ENABLED": "0", "AWS_ENDPOINT_URL": proxy.url, **S3_KEYS,
                   "PYTHONPATH": os.pathsep.join([str(code or REPO / "worker"), str(REPO)])}
            nodes = RayNodes(workers, env)
            env["HOME"] = nodes.temp
            nodes.start()
        yield World(moto, proxy, bucket, events_dir, mounted, nodes)
    finally:
        if nodes is not None:
            nodes.stop()
        if mounted:
            subprocess.run(["umount", "-l", str(events_dir)], capture_output=True)
        proxy.stop()
        server.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


# ---- tally ------------------------------------------------------------------------------------
@dataclass
class FaultCount:
    injected: int = 0
    missed: int = 0  # drawn, but the run ended before it could land
    exits: Counter = field(default_factory=Counter)  # exit codes of the runs it was injected into
    resumes: int = 0
    how: Counter = field(default_factory=Counter)  # e.g. kill: driver 3, worker 2; s3: burst 1, outage 2


@dataclass
class SoakTally(Tally):
    faults: dict[str, FaultCount] = field(default_factory=dict)
    draws: list[str] = field(default_factory=list)
    per_round: list[str] = field(default_factory=list)
    proxy: Counter = field(default_factory=Counter)

    @property
    def total_faults(self) -> int:
        return sum(f.injected for f in self.faults.values())

    def render(self) -> str:
        lines = [f"soak on {self.executor}: {self.partitions} partitions x {self.rows // max(self.partitions, 1)} rows "
                 f"({self.rows} rows), {self.rounds} round(s), {self.runs} dj-process runs, wall {self.wall_s:.0f}s, "
                 f"seed {self.seed}",
                 f"faults injected: {self.total_faults}",
                 f"{'fault':<10} {'injected':>8} {'missed':>6} {'resumes':>7}  run exits (code: runs)  how"]
        for name, f in sorted(self.faults.items()):
            exits = ", ".join(f"{k}: {v}" for k, v in sorted(f.exits.items(), key=str)) or "-"
            how = ", ".join(f"{k} {v}" for k, v in sorted(f.how.items())) or "-"
            lines.append(f"{name:<10} {f.injected:>8} {f.missed:>6} {f.resumes:>7}  {exits:<22} {how}")
        lines.append("all run exits: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.exits.items(), key=str)))
        lines.append("S3 proxy: " + ", ".join(f"{k} {v}" for k, v in sorted(self.proxy.items())))
        lines += [f"  {r}" for r in self.per_round]
        lines.append(f"lost: {self.lost}  duplicated: {self.duplicated}  mismatched: {self.mismatched}  "
                     f"accounting problems: {len(self.problems)}  orphans: {len(self.orphans)}  "
                     f"late worker events: {self.late_events}")
        lines += [f"  problem: {p}" for p in self.problems[:20]]
        lines += [f"  orphan: {pid} {cmd}" for pid, cmd in list(self.orphans.items())[:20]]
        lines.append("RESULT: " + ("OK, exactly once" if self.ok else "FAILED"))
        return "\n".join(lines)


# ---- the harness ------------------------------------------------------------------------------
class Soak(Chaos):
    def __init__(self, root: Path, w: World, faults: tuple[str, ...], executor: str, partitions: int,
                 rows_per_partition: int, np: int, seed: int, log: Callable[[str], None], code: Optional[Path],
                 first: bool = False):
        super().__init__(root, executor, partitions, rows_per_partition, np, seed, TIMED + tuple(FAILPOINTS), (),
                         log, code)
        self.w, self.faults = w, faults
        self.tally = SoakTally(executor, partitions, partitions * rows_per_partition, seed)
        self.tally.faults = {f: FaultCount() for f in faults}
        self.first = []  # kill kinds: random from the start
        # with first, every fault kind once (in a seeded order, each until it lands), then random ones
        self.pending = self.rng.sample(list(faults), len(faults)) if first else []
        self.extra_env = {"AWS_ENDPOINT_URL": w.proxy.url, **S3_KEYS}
        if w.ray is not None:
            self.extra_env["RAY_ADDRESS"] = w.ray.address

    # -- the job on S3 --
    def recipe_for(self, job: str) -> Path:
        recipe = yaml.safe_load(self.recipe.read_text())
        recipe.update(export_path=f"s3://{self.w.bucket}/out/{job}.jsonl", checkpoint_dir=f"s3://{self.w.bucket}/ckpt",
                      event_log_dir=str(self.w.events_dir),
                      executor_type="ray_partitioned" if self.executor == "ray" else "local")
        path = self.root / f"{job}.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return path

    def files(self, job: str) -> JobFiles:
        return JobFiles.of(job, self.root / "jobs", self.w.events_dir, f"s3://{self.w.bucket}/ckpt")

    def output(self, job: str) -> Path:
        """The job's export, fetched from moto directly to a local file."""
        import s3fs

        local = self.root / "out" / f"{job}.jsonl"
        local.parent.mkdir(exist_ok=True)
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": self.w.moto}, skip_instance_cache=True,
                               use_listings_cache=False)
        local.write_bytes(fs.cat(f"{self.w.bucket}/out/{job}.jsonl"))
        return local

    def reference(self) -> Path:
        t0 = time.time()
        code = self.finish(self.start("reference", self.recipe_for("reference")))
        self.tally.runs -= 1  # not a soak run
        self.tally.exits[code] -= 1
        if code != 0:
            raise RuntimeError(f"the uninterrupted reference run failed ({code}): see {self.root / 'logs'}")
        self.clean_s = time.time() - t0
        self.log(f"reference run: {self.clean_s:.1f}s")
        return self.output("reference")

    # -- waiting for a moment mid-run --
    def moment(self, run: Run, job: str) -> bool:
        """Wait a random moment inside the work that remains; False if the run ended first."""
        deadline = time.time() + self.rng.uniform(0.2, max(0.5, 0.6 * self.clean_s * (0.2 + 0.8 * self.remaining(job))))
        while time.time() < deadline:
            if run.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return run.proc.poll() is None

    def finish(self, run: Run, timeout: Optional[float] = None) -> int:
        """Chaos's finish, with room for a big job: ten clean runs' time, at least 10 min."""
        return super().finish(run, timeout or max(600.0, 10 * self.clean_s))

    @staticmethod
    def wait_exit(run: Run, seconds: float) -> Optional[int]:
        try:
            return run.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return None

    def degraded(self, job: str) -> bool:
        try:
            return bool(self.files(job).summary().get("event_log_degraded"))
        except (OSError, ValueError):
            return False

    # -- the injectors: each returns (landed, how, run ended: its exit code or None) --
    def inject_kill(self, run: Run, job: str, failpoint: Optional[str]) -> tuple[bool, str, Optional[int]]:
        if failpoint:
            code = self.finish(run)
            return code == -signal.SIGKILL, failpoint.split("=")[0], code
        kind = self.rng.choice(TIMED)
        if kind == "worker" and self.w.ray is not None:  # the driver's tree holds no Ray worker on a cluster
            if not self.moment(run, job):
                return False, kind, None
            give_up = time.time() + max(5.0, self.clean_s)
            while time.time() < give_up and run.proc.poll() is None:
                victims = self.w.ray.task_workers()
                if victims:
                    with contextlib.suppress(psutil.Error):
                        self.rng.choice(victims).kill()
                        return True, kind, None
                time.sleep(0.05)
            return False, kind, None
        return self.timed_kill(run, kind, job), kind, None

    def inject_s3(self, run: Run, job: str) -> tuple[bool, str, Optional[int]]:
        if not self.moment(run, job):
            return False, "burst", None
        if self.rng.random() < 0.5:
            rate, (lo, hi) = BURST
            self.w.proxy.set(rate=rate)
            time.sleep(self.rng.uniform(lo, hi))
            self.w.proxy.set(rate=0.0)
            return True, "burst", None
        # every request refused or reset, until the run gives up with its storage exit or the
        # outage ends (a big job keeps retrying partitions for longer than a soak can wait)
        self.w.proxy.set(rate=1.0, kinds=OUTAGE_KINDS)
        try:
            code = self.wait_exit(run, self.rng.uniform(*OUTAGE_S))
        finally:
            self.w.proxy.set(rate=0.0, kinds=FaultPlan().kinds)
        if code is None:
            return True, "outage, ridden out", None
        code = self.finish(run)
        if code not in STORAGE_EXITS:
            self.tally.problems.append(f"{job}: an S3 outage ended a run with exit {code}, not a storage exit {STORAGE_EXITS}")
        return True, f"outage, exit {code}", code

    def inject_ray_node(self, run: Run, job: str) -> tuple[bool, str, Optional[int]]:
        assert self.w.ray is not None
        if not self.moment(run, job):
            return False, "node", None
        self.w.ray.remove_node(self.rng)
        time.sleep(self.rng.uniform(1.0, 5.0))
        self.w.ray.add_node()
        return True, "node removed and added", None

    def inject_enospc(self, run: Run, job: str) -> tuple[bool, str, Optional[int]]:
        if not self.moment(run, job):
            return False, "full", None
        ballast = self.w.events_dir / "ballast"
        try:
            fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                for size in (1 << 20, 4096, 1):  # MiBs, then the last pages, then the last bytes
                    with contextlib.suppress(OSError):
                        while os.write(fd, b"\0" * size):
                            pass
            finally:
                os.close(fd)
            time.sleep(self.rng.uniform(2.0, 5.0))
        finally:
            ballast.unlink(missing_ok=True)
        code = self.finish(run)
        return self.degraded(job), "full", code

    def inject_ray_head(self, run: Run, job: str) -> tuple[bool, str, Optional[int]]:
        expected = head_loss_exit_code()
        assert self.w.ray is not None and expected is not None
        if not self.moment(run, job):
            return False, "head", None
        self.w.ray.kill_head()  # and a new cluster, which the resume attaches to
        self.extra_env["RAY_ADDRESS"] = self.w.ray.address
        code = self.finish(run, timeout=300)
        if code != expected:
            self.tally.problems.append(f"{job}: the head's loss ended the driver with exit {code}, not {expected}")
        return True, "head killed, new cluster", code

    # -- one round: one job, faults until the budget is spent, then to completion --
    def round(self, job: str, budget: int, reference: Path) -> int:
        spent, recipe, previous = 0, self.recipe_for(job), None
        drawn: list[str] = []
        failed_clean = 0  # runs after the budget was spent that failed anyway
        while True:
            fault = (self.pending[0] if self.pending else self.rng.choice(self.faults)) if spent < budget else None
            failpoint = None
            if fault == "kill" and self.rng.random() < 0.5:
                failpoint = self.failpoint_spec(self.choose_failpoint(job), job)
            if previous is not None:
                self.tally.faults[previous].resumes += 1
            run = self.start(job, recipe, failpoint=failpoint)
            code: Optional[int] = None
            if fault is not None:
                self.tally.draws.append(fault)
                landed, how, code = getattr(self, "inject_" + fault.replace("-", "_"))(run, job, *(
                    (failpoint,) if fault == "kill" else ()))
                count = self.tally.faults[fault]
                if landed:
                    spent += 1
                    count.injected += 1
                    count.how[how] += 1
                    drawn.append(fault)
                    if fault in self.pending:
                        self.pending.remove(fault)
                    self.log(f"  {job}: {fault} ({how}) ({spent}/{budget})")
                else:
                    count.missed += 1
            if code is None:
                code = self.finish(run)
            if fault is not None:
                self.tally.faults[fault].exits[code] += 1
            previous = fault if fault is not None else previous
            if code == 0 and self.degraded(job):
                self.log(f"  {job}: completed with a degraded event log; resuming to write it in full")
                continue
            if code == 0 or self.completed(job):
                break
            if fault is None:
                failed_clean += 1
                if failed_clean == 3:
                    self.tally.problems.append(f"{job}: 3 runs without a fault failed in a row (last exit {code}): "
                                               f"see {self.root / 'logs'}")
                    self.tally.rounds += 1
                    return spent
            if code not in (0, -signal.SIGKILL):
                self.log(f"  {job}: run exited {code}; resuming")
        out = self.output(job)
        before = (self.tally.lost, self.tally.duplicated, self.tally.mismatched)
        compare(reference, out, self.tally)
        files = self.files(job)
        self.tally.problems += accounting(files, sum(1 for line in out.read_bytes().splitlines() if line))
        self.tally.late_events += len(late_worker_events(files.events(torn="mark")))
        self.tally.rounds += 1
        after = (self.tally.lost, self.tally.duplicated, self.tally.mismatched)
        self.tally.per_round.append(f"{job}: faults {dict(Counter(drawn))}; lost {after[0] - before[0]}, "
                                    f"duplicated {after[1] - before[1]}, mismatched {after[2] - before[2]}")
        return spent

    def choose_failpoint(self, job: str) -> str:
        fits = [k for k in self.choose_kinds(job) if k in FAILPOINTS]
        return self.rng.choice(fits or ["export_mid_write"])

    def choose_kinds(self, job: str) -> list[str]:
        """Failpoints that can still fire: none inside partitions once every partition is done."""
        done = self.remaining(job) <= 0.05 and self.files(job).plan() is not None
        return [k for k in FAILPOINTS if not (done and k in ("checkpoint_mid_write", "op_done", "partition_done"))]


def soak(root: Path, faults_n: int, faults: tuple[str, ...], executor: str = "ray", partitions: int = 100,
         rows_per_partition: int = 100, np: int = 2, seed: int = 0, workers: int = 2,
         log: Callable[[str], None] = print, code: Optional[Path] = None, first: bool = False) -> SoakTally:
    """Run the soak under root (a fresh directory); return the tally. With `first`, each fault kind
    is injected once (retried until it lands) before the random draws."""
    check_faults(faults)
    if executor != "ray" and set(faults) & set(RAY_FAULTS):
        raise ValueError(f"{sorted(set(faults) & set(RAY_FAULTS))} need --executor ray")
    t0 = time.time()
    with world(root, faults, executor, workers, seed, code) as w:
        harness = Soak(root, w, faults, executor, partitions, rows_per_partition, np, seed, log, code, first)
        try:
            run_rounds(harness, faults_n, lambda: harness.tally.total_faults, "soak", f"fault ({faults})")
            reap_orphans(harness, 15)
        finally:
            harness.cleanup()
            harness.tally.proxy = Counter(w.proxy.tally)
    harness.tally.wall_s = time.time() - t0
    return harness.tally


def parse_faults(text: str) -> tuple[str, ...]:
    faults = tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    check_faults(faults)
    return faults

