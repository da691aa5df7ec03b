"""Stop a running job: cooperatively first, by force only after a timeout, never the wrong process.

Order of business (see docs/job-management.md):
1. Verify the driver recorded in job_summary.json is this very process: same host,
   pid and process start time. A reused pid or a job on another host is never signalled.
2. Snapshot the driver's process tree (pool workers, forkserver, Ray processes it
   started), its process group when it leads one, and every process carrying its
   run marker (MARKER_ENV), before anything can be orphaned.
3. Ask: write {job_dir}/STOP and, if the driver handles it, send SIGTERM. The driver
   checkpoints in-flight partitions at their next op boundary, writes JOB_STOPPED and
   `status: stopped`, and exits.
4. After `timeout` seconds (at once with force): freeze the tree with SIGSTOP, then
   SIGKILL all of it, and record the stop the driver could not.
5. Kill stragglers of the snapshot and check that none remain.
dj-stop is its CLI."""
from __future__ import annotations

import os
import signal
import time
from typing import Any, Iterable, Optional

import psutil

from ..events import EventLog, EventType
from . import stop_request
from .common import JobNotFound, JobReader, list_running_jobs
from .liveness import MARKER_ENV, START_TIME_TOLERANCE_S, DriverState, driver_marker, has_fresh_lock
from .summary import JobSummary, write_summary

POLL_S = 0.2
CHILD_GRACE_S = 3.0  # for the driver's children to exit on their own once it has
KILL_EXIT_CODE = 137


def catches_sigterm(pid: int) -> Optional[bool]:
    """Whether the process installed a SIGTERM handler (Linux /proc); None when unknown.

    A driver still importing, or run_job() called off the main thread, would die on
    SIGTERM without checkpointing: such a driver is asked through the STOP file only."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    except OSError:
        return None
    return None


class ProcessTree:
    """The driver and every process it started, each pinned by pid + start time (psutil)."""

    def __init__(self, roots: list[psutil.Process], marker: Optional[str], group: Optional[int]):
        self.marker, self.group = marker, group
        self.members: dict[int, psutil.Process] = {}
        me = psutil.Process()
        self.exclude = {me.pid, *(p.pid for p in me.parents())}  # never ourselves or whoever runs us
        self._add(roots)

    def _add(self, procs: Iterable[psutil.Process]) -> None:
        for proc in procs:
            if proc.pid not in self.exclude and proc.pid not in self.members:
                self.members[proc.pid] = proc

    def refresh(self, sweep: bool = False) -> None:
        """Add new descendants; with sweep, also the driver's process group and marked processes."""
        for proc in list(self.members.values()):
            try:
                self._add(proc.children(recursive=True))
            except psutil.Error:
                continue
        if sweep:
            self._add(self._swept())

    def _swept(self) -> Iterable[psutil.Process]:
        uid = os.getuid()
        for proc in psutil.process_iter():
            try:
                if self.group is not None and os.getpgid(proc.pid) == self.group:
                    yield proc
                elif self.marker and proc.uids().real == uid and proc.environ().get(MARKER_ENV) == self.marker:
                    yield proc
            except (psutil.Error, OSError):
                continue

    def alive(self) -> list[psutil.Process]:
        return [proc for proc in self.members.values() if is_live(proc)]

    def kill(self, wait_s: float = 5.0) -> list[int]:
        """Freeze everything first so nothing forks a replacement, then SIGKILL; return the pids killed."""
        for proc in self.alive():
            _quietly(proc.suspend)
        self.refresh(sweep=True)
        victims = self.alive()
        for proc in victims:
            _quietly(proc.kill)
        deadline = time.time() + wait_s  # zombies count as gone: whoever reaps them is not our business
        while any(is_live(p) for p in victims) and time.time() < deadline:
            time.sleep(0.05)
        return sorted(p.pid for p in victims)


def is_live(proc: psutil.Process) -> bool:
    """Running and not a zombie (a killed child waits for its parent to reap it, doing nothing)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _quietly(fn: Any) -> None:
    try:
        fn()
    except psutil.Error:
        pass


class JobStopper:
    """Stops one job under base_dir (the recipe's work_dir, default ./outputs/partition-checkpoint-eventlog)."""

    def __init__(self, job_id: str, base_dir: Optional[str] = None):
        self.job_id = job_id
        self.job = JobReader(job_id, base_dir)

    def get_job_summary(self) -> Optional[JobSummary]:
        return self.job.reload()

    def is_job_running(self) -> bool:
        return self.job.is_running()

    def stop_job(self, force: bool = False, timeout: float = 30.0) -> dict[str, Any]:
        """Stop the job and return what happened: `outcome` is stopped | killed | not_running |
        refused | requested | not_found; `success` says the job no longer runs because of this call."""
        summary = self.get_job_summary()
        if summary is None:
            return self._result("not_found", False, str(JobNotFound(
                f"job {self.job_id} not found: no {self.job.paths.summary}; pass --base-dir "
                "(the recipe's work_dir)")))
        state = self.job.driver()
        if state.state == "other_host":
            return self._stop_elsewhere(summary, state, force, timeout)
        if state.state == "unproven":  # never signal what cannot be proven to be the job's
            stop_request.request(self.job.storage, self.job.paths)
            return self._result("refused", False, f"job {self.job_id}: {state.detail}; nothing was signalled. "
                                f"A stop request file was written instead: a live driver of this job stops at "
                                f"its next check", pid=state.pid, host=state.host, reason="unproven")
        if not state.is_alive:
            return self._not_running(summary, state)
        identity = summary.process or {}
        try:  # psutil pins this object to the start time it reads now: check it is still the driver's
            driver = psutil.Process(state.pid)
            if abs(driver.create_time() - float(identity["process_start_time"])) >= START_TIME_TOLERANCE_S:
                raise psutil.NoSuchProcess(state.pid)
        except psutil.NoSuchProcess:
            return self._not_running(summary, self.job.driver())
        leads_group = int(identity.get("pgid") or -1) == state.pid  # else the group is the launcher's
        tree = ProcessTree([driver], driver_marker(self.job_id, identity), state.pid if leads_group else None)
        tree.refresh(sweep=True)
        t0 = time.time()
        method, killed = "force", []
        if not force:
            method = "graceful"
            self._request(driver)
            if not self._wait_exit(driver, tree, timeout):
                method = "sigkill"
        killed = tree.kill() if is_live(driver) else self._reap_stragglers(tree)
        remaining = sorted(p.pid for p in tree.alive())
        stop_request.clear(self.job.storage, self.job.paths)  # outliving its run, it would stop the next resume
        final = self._record_end(summary, method, timeout, time.time() - t0)
        outcome = "stopped" if method == "graceful" else "killed"
        message = self._message(method, state, timeout, killed, remaining, final)
        return self._result(outcome, not remaining, message, method=method, pid=state.pid, host=state.host,
                            tree=sorted(tree.members), killed=killed, remaining=remaining, final_status=final,
                            elapsed_s=round(time.time() - t0, 3))

    # ---- steps ---------------------------------------------------------------
    def _request(self, driver: psutil.Process) -> None:
        """The cooperative request: the STOP file always, SIGTERM when the driver handles it."""
        stop_request.request(self.job.storage, self.job.paths)
        if catches_sigterm(driver.pid) is not False:
            _quietly(lambda: driver.send_signal(signal.SIGTERM))

    def _wait_exit(self, driver: psutil.Process, tree: ProcessTree, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            tree.refresh()  # a pool rebuilt meanwhile must not escape the snapshot
            if not is_live(driver):
                return True
            time.sleep(POLL_S)
        return False

    def _reap_stragglers(self, tree: ProcessTree) -> list[int]:
        """After a clean exit the pool and forkserver leave by themselves; whoever stays is killed."""
        deadline = time.time() + CHILD_GRACE_S
        while tree.alive() and time.time() < deadline:
            time.sleep(POLL_S)
        tree.refresh(sweep=True)
        return tree.kill() if tree.alive() else []

    def _record_end(self, summary: JobSummary, method: str, timeout: float, took: float) -> Optional[str]:
        """Write the JOB_STOPPED event and `status: stopped` that a killed driver could not write."""
        current = self.get_job_summary() or summary
        if current.status != "running":
            return current.status
        why = {"force": "force-stopped (SIGKILL) by dj-stop",
               "sigkill": f"killed (SIGKILL) by dj-stop after {timeout:g}s without a cooperative stop",
               "graceful": "exited on dj-stop's request without recording its end"}[method]
        message = f"job {self.job_id} {why}; in-flight partitions resume from their last checkpoint"
        if current.resumption_command:
            message += f": {current.resumption_command}"
        log = EventLog(self.job.paths.event_dir, self.job_id)
        try:
            log.emit(EventType.JOB_STOPPED, message=message, killed=True, method=method,
                     stopped_pid=(current.process or {}).get("pid"))
        finally:
            log.close()
        now = time.time()
        write_summary(self.job.storage, self.job.paths, current.model_copy(update=dict(
            status="stopped", end_time=now, duration_s=now - (current.start_time or now), error=message,
            exit_code=KILL_EXIT_CODE, stopped_by={"pid": os.getpid(), "method": method, "after_s": round(took, 3)})))
        return "stopped"

    def _not_running(self, summary: JobSummary, state: DriverState) -> dict[str, Any]:
        """Nothing to signal. Orphans that carry this run's marker are still cleaned up."""
        killed: list[int] = []
        identity = summary.process
        if identity and state.state in ("gone", "reused"):
            tree = ProcessTree([], driver_marker(self.job_id, identity), None)
            tree.refresh(sweep=True)
            killed = tree.kill() if tree.alive() else []
        status = summary.status
        if state.state == "reused":
            message = f"job {self.job_id} is not running: {state.detail}; it was not signalled"
        elif status == "running":
            message = f"job {self.job_id} is not running: {state.detail} without recording an end; " \
                      f"resume it with: {summary.resumption_command}"
        else:
            message = f"job {self.job_id} is not running (status: {status}; {state.detail})"
        if killed:
            message += f"; killed {len(killed)} orphaned process(es) it had started: {killed}"
        return self._result("not_running", False, message, pid=state.pid, host=state.host, killed=killed,
                            final_status=status, reason=state.state)

    def _stop_elsewhere(self, summary: JobSummary, state: DriverState, force: bool,
                        timeout: float) -> dict[str, Any]:
        """A driver on another host is never signalled; a live one can still be asked through STOP."""
        if summary.status != "running" or not has_fresh_lock(summary.process, self.job.lock_holder(), time.time()):
            return self._result("not_running", False, f"job {self.job_id} is not running here or elsewhere "
                                f"(status: {summary.status}; {state.detail}, no recent heartbeat); "
                                "nothing was signalled", pid=state.pid, host=state.host, reason="other_host")
        if force:
            return self._result("refused", False, f"job {self.job_id}: {state.detail}; --force cannot signal a "
                                f"process on another host: run 'dj-stop {self.job_id} --force' on {state.host}",
                                pid=state.pid, host=state.host, reason="other_host")
        stop_request.request(self.job.storage, self.job.paths)
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = (self.get_job_summary() or JobSummary()).status
            if status != "running":
                return self._result("stopped", True, f"job {self.job_id} on {state.host} stopped on request "
                                    f"(status: {status}); no signal was sent", method="stop_file",
                                    pid=state.pid, host=state.host, final_status=status)
            time.sleep(POLL_S * 5)
        return self._result("requested", False, f"job {self.job_id}: stop requested through "
                            f"{self.job.paths.stop_request}, but the driver ({state.detail}) did not confirm "
                            f"within {timeout:g}s; no signal was sent to another host: run dj-stop on "
                            f"{state.host} to force it", method="stop_file", pid=state.pid, host=state.host)

    # ---- reporting -----------------------------------------------------------
    def _message(self, method: str, state: DriverState, timeout: float, killed: list[int],
                 remaining: list[int], final: Optional[str]) -> str:
        head = {"graceful": f"job {self.job_id} stopped cooperatively (pid {state.pid}); status: {final}",
                "sigkill": f"job {self.job_id} did not stop within {timeout:g}s; killed its {len(killed)} "
                           f"process(es); status: {final}",
                "force": f"job {self.job_id} force-stopped: killed its {len(killed)} process(es); status: {final}"}
        msg = head[method]
        if final == "completed":
            msg = f"job {self.job_id} completed before it could stop (pid {state.pid})"
        if method == "graceful" and killed:
            msg += f"; killed {len(killed)} process(es) it left behind: {killed}"
        if remaining:
            msg += f"; WARNING: {len(remaining)} process(es) still alive: {remaining}"
        return msg

    def _result(self, outcome: str, success: bool, message: str, **fields: Any) -> dict[str, Any]:
        return {"job_id": self.job_id, "outcome": outcome, "success": success, "message": message,
                "method": None, "pid": None, "host": None, "tree": [], "killed": [], "remaining": [],
                "final_status": None, "reason": None, **fields}


def stop_job(job_id: str, force: bool = False, timeout: float = 30.0, base_dir: Optional[str] = None) -> dict[str, Any]:
    """Stop a job (see JobStopper.stop_job)."""
    return JobStopper(job_id, base_dir).stop_job(force=force, timeout=timeout)


__all__ = ["JobStopper", "ProcessTree", "stop_job", "list_running_jobs", "catches_sigterm"]
