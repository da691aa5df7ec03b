"""The STOP request file ({job_dir}/STOP): the one module that writes, reads and clears it.

It is how a stopper asks a driver it cannot (or should not) signal to stop: a driver
on another host, or one that handles no SIGTERM. The driver polls it between partitions."""
from __future__ import annotations

import os
import socket
import time
from typing import Optional

import orjson

from ..errors import DJError
from ..storage import Storage
from .paths import JobPaths


def request(storage: Storage, paths: JobPaths, now: Optional[float] = None) -> None:
    storage.put_bytes(paths.stop_request, orjson.dumps({"requested_at": time.time() if now is None else now,
                                                        "by_pid": os.getpid(), "by_host": socket.gethostname()}))


def is_requested(storage: Storage, paths: JobPaths) -> bool:
    """Never raises: a storage hiccup while polling must not fail the job it would stop."""
    try:
        return storage.exists(paths.stop_request)
    except DJError:
        return False


def clear(storage: Storage, paths: JobPaths) -> None:
    if is_requested(storage, paths):
        storage.remove(paths.stop_request)


def clear_stale(storage: Storage, paths: JobPaths, started_at: float) -> None:
    """A STOP left by a crashed stopper before this run began must not stop this run."""
    try:
        requested_at = float(orjson.loads(storage.read_bytes(paths.stop_request)).get("requested_at", 0))
    except (FileNotFoundError, NotADirectoryError):
        return
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        requested_at = 0.0
    if requested_at < started_at:
        storage.remove(paths.stop_request)
