"""JobLock: one live run per job id; a stale lock (dead holder, or a silent remote one) is taken over."""
from __future__ import annotations

import os
import socket
import time
from datetime import datetime
from typing import Any, Optional

import orjson

from ..errors import JobLocked
from ..storage import Storage
from .liveness import holder_is_live, process_identity
from .paths import JobPaths


def read_holder(storage: Storage, paths: JobPaths) -> Optional[dict[str, Any]]:
    try:
        return orjson.loads(storage.read_bytes(paths.lock))
    except (FileNotFoundError, NotADirectoryError, orjson.JSONDecodeError):
        return None


class JobLock:
    def __init__(self, storage: Storage, paths: JobPaths):
        self.storage, self.paths = storage, paths
        self.identity = {**process_identity(), "acquired_at": time.time()}

    def holder(self) -> Optional[dict[str, Any]]:
        return read_holder(self.storage, self.paths)

    def acquire(self) -> None:
        holder = self.holder()
        if holder and holder.get("pid") != os.getpid() and holder_is_live(holder, time.time()):
            since = datetime.fromtimestamp(holder.get("acquired_at", 0)).strftime("%H:%M:%S")
            raise JobLocked(f"job {self.paths.job_id} is running (pid {holder['pid']} on {holder['host']} since {since}); "
                            f"stop it with 'dj-stop {self.paths.job_id}' or pass another --job_id")
        self.heartbeat()

    def heartbeat(self) -> None:
        self.storage.put_bytes(self.paths.lock, orjson.dumps({**self.identity, "heartbeat": time.time()}))

    def release(self) -> None:
        holder = self.holder()
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.storage.remove(self.paths.lock)
