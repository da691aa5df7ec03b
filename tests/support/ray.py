"""Ray runs of dj-process: a short temp dir per run and a record of every process it started;
and a real Ray cluster head for drivers that connect to a remote cluster.

Each dj-process with `executor_type: ray` starts (and stops) its own local Ray. The
fixture watches the driver's descendants while it runs, so a test can assert that
none outlive it, and at teardown kills by pid whatever a failed test left behind.
Never `ray stop`: other Rays on this machine are not ours."""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import psutil
import pytest

from tests.support.artifacts import JobFiles
from tests.support.engine import env_with
from tests.support.k8s import free_port
from tests.support.wait import wait_for


def descendants(pid: int) -> dict[int, str]:
    try:
        return {p.pid: _name(p) for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return {}


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return "?"


def alive(pids: Any) -> dict[int, str]:
    """The pids that still run (zombies count as gone)."""
    out = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                out[pid] = _name(proc)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(pids: Any, timeout: float) -> dict[int, str]:
    deadline = time.time() + timeout
    while (left := alive(pids)) and time.time() < deadline:
        time.sleep(0.2)
    return left


def kill_pids(pids: Any) -> None:
    for pid in alive(pids):
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass


@dataclass
class RayRun:
    """One dj-process run on a local Ray, watched from the outside."""

    proc: subprocess.Popen
    job: JobFiles
    log_path: Path
    seen: dict[int, str] = field(default_factory=dict)

    def watch(self) -> None:
        if self.proc.poll() is None:
            for pid, name in descendants(self.proc.pid).items():
                if name != "?" or pid not in self.seen:  # a process on its way out has no name: keep the one seen
                    self.seen[pid] = name

    def events(self) -> list[dict[str, Any]]:
        return self.job.events_so_far()

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 120,
                 what: str = "") -> list[dict[str, Any]]:
        """Poll the event log (and record Ray's processes) until predicate holds; fail on a deadline."""
        def probe() -> Optional[list[dict[str, Any]]]:
            self.watch()
            evs = self.events()
            return evs if predicate(evs) else None

        return wait_for(probe, timeout, what or f"the event log to satisfy {predicate.__name__}",
                        lambda: f"dj-process output:\n{self.output[-3000:]}", every=0.1, process=self.proc)

    def finish(self, timeout: float = 180) -> int:
        deadline = time.time() + timeout
        while self.proc.poll() is None and time.time() < deadline:
            self.watch()
            time.sleep(0.1)
        return self.proc.wait(timeout=max(1.0, deadline - time.time()))

    @property
    def output(self) -> str:
        """stdout and stderr (a file, not a pipe: a full pipe would block the driver)."""
        return self.log_path.read_text(errors="replace")

    @property
    def ray_pids(self) -> dict[int, str]:
        return dict(self.seen)


@pytest.fixture
def ray_runs() -> Iterator[Callable[..., RayRun]]:
    """Start dj-process runs with executor ray, each with its own short Ray temp dir
    (socket paths must stay under 108 bytes). Teardown kills, by pid, anything left."""
    runs: list[RayRun] = []
    temps: list[str] = []

    def start(recipe: Path, job_id: str, *args: str, env: Optional[dict[str, str]] = None) -> RayRun:
        temp = tempfile.mkdtemp(prefix="djr-", dir="/tmp")
        temps.append(temp)
        log = Path(temp) / "dj-process.out"
        cmd = [sys.executable, "-m", "djworker.cli.process", "--config", str(recipe), "--job_id", job_id, "--quiet", *args]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, env=env_with({"DJ_RAY_TEMP_DIR": temp, **(env or {})}), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, cwd=recipe.parent)
        run = RayRun(proc, JobFiles.for_recipe(recipe, job_id), log)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
        kill_pids(run.seen)
    for temp in temps:
        shutil.rmtree(temp, ignore_errors=True)


@dataclass
class RayHead:
    """A Ray cluster head started with `ray start --head`, as KubeRay's head pod runs one."""

    proc: subprocess.Popen
    address: str  # ray://127.0.0.1:<client port>: Ray Client, what the operator gives its driver pod
    gcs_address: str  # 127.0.0.1:<port>: a driver on the head's own network attaching directly
    driver_env: dict[str, str] = field(default_factory=dict)  # what a driver needs to be let in

    def processes(self) -> set[int]:
        return cluster_processes(self.proc.pid)

    def kill(self) -> set[int]:
        """The head dies at once, as a lost head pod does: SIGKILL to every process of the cluster."""
        procs = self.processes()
        for sig_pid in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(sig_pid, signal.SIGKILL)
        return procs

    def pause(self, seconds: float) -> None:
        """The head stops answering for `seconds` (SIGSTOP to the whole cluster), then comes back:
        to its clients, a network blip with every connection still open."""
        procs = self.processes()
        for sig_pid in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(sig_pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            for sig_pid in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(sig_pid, signal.SIGCONT)


def cluster_processes(pgid: int) -> set[int]:
    """Every live process of a cluster whose head leads process group pgid: its daemons, and
    their descendants (Ray's workers, which take sessions of their own)."""
    out = set()
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid:
                out |= {proc.pid, *(c.pid for c in proc.children(recursive=True))}
        except (ProcessLookupError, psutil.Error):
            pass
    return set(alive(out))


@contextlib.contextmanager
def running_ray_head(env: dict[str, str], num_cpus: int = 2, workers: int = 0) -> Iterator[RayHead]:
    """`ray start --head` on loopback, with `env` (as a head pod's env) over a minimal one, plus
    `workers` worker nodes of one CPU each (`ray start --address`, as worker pods join);
    yields once every daemon is up. Torn down by its own process group: never `ray stop`,
    which would kill every Ray on this machine."""
    temp = tempfile.mkdtemp(prefix="djh-", dir="/tmp")  # Ray's socket paths must stay short
    gcs_port, client_port = free_port(), free_port()
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--port={gcs_port}", f"--ray-client-server-port={client_port}",
           f"--dashboard-agent-listen-port={free_port()}", f"--num-cpus={num_cpus}", "--include-dashboard=false",
           "--object-store-memory=200000000", f"--temp-dir={temp}", "--disable-usage-stats"]
    base = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin:/bin"]), "HOME": temp,
            "LANG": "C.UTF-8", "RAY_USAGE_STATS_ENABLED": "0"}
    log = Path(temp) / "head.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env={**base, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    groups = [proc]  # process groups to tear down: the head's, then one per worker node
    def up() -> bool:  # every daemon is up (the runtime-env agent too), and the client port listens
        if "Ray runtime started" not in log.read_text(errors="replace"):
            return False
        socket.create_connection(("127.0.0.1", client_port), timeout=1).close()
        return True

    try:
        wait_for(up, 90, "the Ray head", lambda: log.read_text(errors="replace")[-3000:], every=0.5,
                 ignore=(OSError,), process=proc)
        for i in range(workers):  # each in its own session, torn down below like the head's
            wlog = Path(temp) / f"worker{i}.out"
            with open(wlog, "wb") as out:
                groups.append(subprocess.Popen(
                    [cmd[0], "start", "--block", f"--address=127.0.0.1:{gcs_port}", "--node-ip-address=127.0.0.1",
                     "--num-cpus=1", "--object-store-memory=200000000", f"--dashboard-agent-listen-port={free_port()}",
                     "--disable-usage-stats"],
                    env={**base, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
            wait_for(lambda: "Ray runtime started" in wlog.read_text(errors="replace"), 90, f"Ray worker node {i}",
                     lambda: wlog.read_text(errors="replace")[-3000:], every=0.5)
        yield RayHead(proc, f"ray://127.0.0.1:{client_port}", f"127.0.0.1:{gcs_port}")
    finally:
        for group in reversed(groups):  # worker nodes first, then the head
            for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
                try:
                    os.killpg(group.pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.time() + grace
                while time.time() < deadline and cluster_processes(group.pid) - {group.pid}:
                    time.sleep(0.2)
            group.wait(timeout=10)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    """A real Ray head with token authentication, for drivers that connect through Ray Client."""
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    with running_ray_head(auth) as head:
        head.driver_env = auth
        yield head
