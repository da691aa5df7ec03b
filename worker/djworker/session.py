"""job_session: everything a driver holds while it runs a job, taken on entry and restored on exit.

That is the job lock and its heartbeat, the driver file that proves liveness, SIGTERM/SIGINT
handlers, the STOP-request file, the progress endpoint and the driver-marker env var that
every process the run starts inherits. On exit each is given back, whatever happened, so an
in-process caller (a test, a notebook) is left as it was."""
from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from loguru import logger

from .errors import StorageUnavailable
from .jobs import MARKER_ENV, JobLock, JobPaths, driver_marker, stop_request
from .storage import Storage

HEARTBEAT_S = 10.0  # a live run keeps its lock fresh for readers on other hosts


@dataclass
class StopFlag:
    """A stop asked for by a signal or the STOP file.

    A plain bool, not a threading.Event: `request` runs inside a signal handler, and a handler that
    takes a lock the interrupted main thread already holds (Event.set does) deadlocks the driver.
    `relay` tells a running executor at once, if its request_stop is signal-safe too."""

    requested: bool = False
    relay: Optional[Callable[[], None]] = None

    def request(self) -> None:
        self.requested = True
        relay = self.relay
        if relay is not None:
            relay()


@dataclass
class JobSession:
    storage: Storage
    paths: JobPaths
    lock: JobLock
    stop: StopFlag = field(default_factory=StopFlag)
    last_beat: float = field(default_factory=time.time)
    announced: bool = False

    @property
    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in self.lock.identity.items() if k != "acquired_at"}

    def tick(self, now: float) -> None:
        if now - self.last_beat > HEARTBEAT_S:
            self.lock.heartbeat()
            self.last_beat = now

    def should_stop(self) -> bool:
        """A signal, or a STOP request (dj-stop, the operator) seen now: polled between scheduling steps."""
        if not self.stop.requested and stop_request.is_requested(self.storage, self.paths):
            self.stop.request()
        if self.stop.requested and not self.announced:
            self.announced = True
            logger.warning("stop requested for job {}: checkpointing in-flight partitions", self.paths.job_id)
        return self.stop.requested


@contextmanager
def job_session(storage: Storage, paths: JobPaths, progress_port: Optional[int] = None,
                snapshot: Optional[Callable[[], dict[str, Any]]] = None,
                routes: Optional[Callable[[], dict]] = None) -> Iterator[JobSession]:
    """Raises JobLocked if another live run holds the job. SIGTERM/SIGINT set `session.stop`."""
    storage.makedirs(paths.job_dir)
    lock = JobLock(storage, paths)
    lock.acquire()
    with ExitStack() as stack:
        stack.callback(lock.release)
        stop_request.clear_stale(storage, paths, lock.identity["process_start_time"])
        stack.callback(stop_request.clear, storage, paths)  # a STOP outliving its run would stop the next at once
        try:
            os.makedirs(paths.event_dir, exist_ok=True)
            stack.enter_context(open(paths.driver_file, "w"))  # held open: what proves this pid is the driver
        except OSError as err:  # the event log lives there too: the same advice
            raise StorageUnavailable(f"cannot write the event log under {paths.event_dir!r}: {err}; "
                                     "point event_log_dir at a writable local directory") from err
        stack.enter_context(_marker_env(paths.job_id, lock.identity))
        stop = StopFlag()
        stack.enter_context(_signal_handlers(stop.request))
        if progress_port is not None and snapshot is not None:
            from .progress_server import serve

            stack.callback(serve(progress_port, snapshot, routes=routes() if routes else None).shutdown)
        yield JobSession(storage, paths, lock, stop)


@contextmanager
def _marker_env(job_id: str, identity: dict[str, Any]) -> Iterator[None]:
    """Every process this run starts (pool workers, a local Ray) inherits the marker,
    so dj-stop can find them even if they leave the process tree."""
    before = os.environ.get(MARKER_ENV)
    os.environ[MARKER_ENV] = driver_marker(job_id, identity)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MARKER_ENV, None)
        else:
            os.environ[MARKER_ENV] = before


@contextmanager
def _signal_handlers(on_signal: Callable[[], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set them
        yield
        return
    old = {sig: signal.signal(sig, lambda *_: on_signal()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
