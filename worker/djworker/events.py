"""Spark-style event log: `events.jsonl` (the contract) and `events.log` (its prose twin).

If code or a test needs a fact, it is an event; if only a person does, a log line.
Only the driver writes the log; workers hand their events to it as they happen.
The file is appended across resumes of one job and rotated by size, so readers
take the backups (`events.jsonl.N`, oldest first) before the live file.

A full or failing event-log volume (ENOSPC, EIO) does not stop the job: the log is a record,
and resume decisions come from checkpoints and results on storage, never from events. The
first failed write prints one WARNING on stderr; later events are dropped and counted; the
line being written is cut back so the file never holds a torn line; `degraded` (the first
error, events dropped) goes into job_summary.json as `event_log_degraded`."""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Iterator, Optional

import orjson
from loguru import logger

from .errors import StorageUnavailable

SCHEMA_VERSION = 1


class EventType(str, Enum):
    JOB_START = "JOB_START"
    JOB_COMPLETE = "JOB_COMPLETE"
    JOB_FAILED = "JOB_FAILED"
    JOB_STOPPED = "JOB_STOPPED"
    JOB_RESUMED = "JOB_RESUMED"
    PARTITION_START = "PARTITION_START"
    PARTITION_COMPLETE = "PARTITION_COMPLETE"
    PARTITION_FAILED = "PARTITION_FAILED"
    PARTITION_RESUMED = "PARTITION_RESUMED"
    PARTITION_SKIPPED = "PARTITION_SKIPPED"
    OP_START = "OP_START"
    OP_COMPLETE = "OP_COMPLETE"
    OP_FAILED = "OP_FAILED"
    CHECKPOINT_SAVE = "CHECKPOINT_SAVE"
    CHECKPOINT_LOAD = "CHECKPOINT_LOAD"
    CHECKPOINT_INVALID = "CHECKPOINT_INVALID"
    PROCESSING_START = "PROCESSING_START"
    PROCESSING_COMPLETE = "PROCESSING_COMPLETE"
    PROCESSING_ERROR = "PROCESSING_ERROR"
    RESOURCE_USAGE = "RESOURCE_USAGE"
    PERFORMANCE_METRIC = "PERFORMANCE_METRIC"
    WARNING = "WARNING"
    INFO = "INFO"
    DEBUG = "DEBUG"


def make_event(event_type: EventType | str, job_id: str, **fields: Any) -> dict[str, Any]:
    """A plain-dict event stamped where it happened (worker pid/host), ready to ship to the driver.

    Every event has these stamped fields; the rest (partition_id, op_idx, op_name, rows_in, rows_out,
    duration_s, checkpoint_path, retry_count, error, stack_trace, ...) appear only where they apply.
    EventType(event_type) refuses an unknown type here, where the event is made."""
    now = time.time()
    return {
        "schema_version": SCHEMA_VERSION,
        "event_type": EventType(event_type).value,
        "job_id": job_id,
        "timestamp": now,
        "time": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds"),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        **{k: v for k, v in fields.items() if v is not None},
    }


_LEVELS = {"JOB_FAILED": "ERROR", "PARTITION_FAILED": "WARNING", "OP_FAILED": "WARNING",
           "PROCESSING_ERROR": "ERROR", "WARNING": "WARNING", "CHECKPOINT_INVALID": "WARNING",
           "JOB_STOPPED": "WARNING", "DEBUG": "DEBUG"}


def describe(event: dict[str, Any]) -> str:
    """The prose line for events.log."""
    bits = [event["event_type"]]
    if event.get("partition_id") is not None:
        bits.append(f"partition={event['partition_id']}")
    if event.get("op_name"):
        bits.append(f"op[{event.get('op_idx')}]={event['op_name']}")
    for key in ("rows_in", "rows_out", "retry_count", "checkpoint_path"):
        if event.get(key) is not None:
            bits.append(f"{key}={event[key]}")
    if event.get("duration_s") is not None:
        bits.append(f"took={event['duration_s']:.3f}s")
    if event.get("message"):
        bits.append(f"- {event['message']}")
    if event.get("error"):
        bits.append(f"error={event['error']}")
    return " ".join(str(b) for b in bits)


class EventLog:
    """Appends events to events.jsonl and events.log under {event_log_dir}/{job_id}/event_logs."""

    def __init__(self, directory: str, job_id: str, max_log_size_mb: float = 100, backup_count: int = 5,
                 enabled: bool = True, debug: bool = False):
        self.directory = directory
        self.debug = debug  # DEBUG events are dropped here unless asked for, wherever they were made
        self.job_id = job_id
        self.enabled = enabled
        self.path = os.path.join(directory, "events.jsonl")
        self.max_bytes = int(max_log_size_mb * 1024 * 1024)
        self.backup_count = backup_count
        self._lock = threading.Lock()
        self._sink_id: Optional[int] = None
        self.listeners: list[Any] = []
        self.degraded: Optional[dict[str, Any]] = None  # set when a write failed: the log is incomplete
        if enabled:
            try:
                os.makedirs(directory, exist_ok=True)
                self._fh = open(self.path, "ab")
            except OSError as err:
                raise StorageUnavailable(f"cannot write the event log under {directory!r}: {err}; "
                                         "point event_log_dir at a writable local directory") from err
            self._sink_id = logger.add(
                os.path.join(directory, "events.log"), level="DEBUG", enqueue=False,
                rotation=self.max_bytes, retention=backup_count or 1, encoding="utf-8",
                filter=lambda record: record["extra"].get("dj_job") == job_id and self.degraded is None,
                format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}",
            )
        self._log = logger.bind(dj_job=job_id)

    def emit(self, event_type: EventType | str, **fields: Any) -> dict[str, Any]:
        return self.write(make_event(event_type, self.job_id, **fields))

    def write(self, event: dict[str, Any]) -> dict[str, Any]:
        """Append one event (already stamped, possibly by a worker) and tell the listeners."""
        if event["event_type"] == EventType.DEBUG.value and not self.debug:
            return event
        with self._lock:
            if self.enabled and self.degraded is None:
                self._append(event)
            elif self.degraded is not None:
                self.degraded["events_dropped"] += 1
            self._log.log(_LEVELS.get(event["event_type"], "INFO"), describe(event))
        for listener in self.listeners:
            listener(event)
        return event

    def _append(self, event: dict[str, Any]) -> None:
        start = self._fh.tell()
        try:
            self._fh.write(orjson.dumps(event) + b"\n")
            self._fh.flush()
            if self._fh.tell() >= self.max_bytes:
                self._rotate()
        except OSError as err:
            self._degrade(err, start, event)

    def _degrade(self, err: OSError, start: int, event: dict[str, Any]) -> None:
        """Keep the job going without its log: drop the torn tail, warn once, count what is lost."""
        try:  # the buffer still holds the torn line: drop it with the descriptor, never flush it
            fd = self._fh.fileno()
            os.ftruncate(fd, start)  # shrinking a file needs no space
            os.close(fd)
        except (OSError, ValueError):
            pass
        self.degraded = {"error": f"{type(err).__name__}: {err}", "since": event.get("timestamp"),
                         "first_event_lost": event.get("event_type"), "events_dropped": 1, "path": self.path}
        print(f"WARNING: cannot write the event log {self.path} ({err}); the job goes on without it. Its "
              "checkpoints and results are unaffected and a resume is exactly-once, but events from now on are "
              "lost: free space under event_log_dir (job_summary.json has 'event_log_degraded')",
              file=sys.stderr, flush=True)

    def _rotate(self) -> None:
        self._fh.close()
        if self.backup_count > 0:
            for n in range(self.backup_count, 0, -1):
                src = self.path if n == 1 else f"{self.path}.{n - 1}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{n}")
        else:
            os.unlink(self.path)
        self._fh = open(self.path, "ab")

    def close(self) -> None:
        if self.enabled:
            with self._lock:
                try:
                    self._fh.close()
                except (OSError, ValueError):  # degraded: its descriptor is already closed
                    pass
        if self._sink_id is not None:
            logger.remove(self._sink_id)
            self._sink_id = None


def log_files(directory: str) -> list[str]:
    """The event log's files in write order: rotated backups oldest first, then the live file (if any)."""
    path = os.path.join(directory, "events.jsonl")
    backups = sorted(_glob_backups(path), key=lambda p: -int(p.rsplit(".", 1)[1]))
    return [f for f in [*backups, path] if os.path.exists(f)]


def read_events(directory: str) -> Iterator[dict[str, Any]]:
    """Every event of a job in order: rotated backups oldest first, then the live file.

    A torn last line (the writer was killed mid-write) is skipped, not fatal."""
    for file in log_files(directory):
        with open(file, "rb") as fh:
            for line in fh:
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue


def _glob_backups(path: str) -> list[str]:
    directory, base = os.path.split(path)
    if not os.path.isdir(directory):
        return []
    return [os.path.join(directory, n) for n in os.listdir(directory)
            if n.startswith(base + ".") and n.rsplit(".", 1)[1].isdigit()]
