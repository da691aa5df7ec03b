"""The shell: read one job's files (summary, plan, event log) into the dashboard's data.

The driver and `dj-monitor --web` read the same files, so the page looks the same for a
running job and for one that stopped, was killed or finished long ago. Reading is cached
and never more often than the last read took (a 10k-partition log takes a second or two)."""
from __future__ import annotations

import threading
import time
from typing import Any, Optional

from ..jobs.common import JobReader, job_progress
from ..progress import Progress, compact
from ..storage import Storage
from .view import dashboard, timeline

MIN_REFRESH_S = 1.0


class JobView:
    def __init__(self, job_id: str, base_dir: Optional[str] = None, storage: Optional[Storage] = None):
        self._job = (job_id, base_dir, storage)
        self._lock = threading.Lock()
        self._data: Optional[dict[str, Any]] = None
        self._progress: Optional[dict[str, Any]] = None
        self._read_at = 0.0
        self._read_took = 0.0

    def _refresh(self) -> None:
        with self._lock:
            if self._data is not None and time.monotonic() - self._read_at < max(MIN_REFRESH_S, 2 * self._read_took):
                return
            t0 = time.monotonic()
            job = JobReader(*self._job)  # re-reads the summary: a running job's changes
            now = time.time()
            data = job_progress(job, now, detailed=True)
            fold = Progress.model_validate({k: data[k] for k in Progress.model_fields if k in data})
            self._data, self._progress = dashboard(data, timeline(job.events()), now), compact(fold)
            self._read_at, self._read_took = time.monotonic(), time.monotonic() - t0

    def data(self) -> dict[str, Any]:
        """The page's JSON (raises JobNotFound for an unknown job)."""
        self._refresh()
        assert self._data is not None
        return self._data

    def progress(self) -> dict[str, Any]:
        """What the driver serves on /progress, computed from the files."""
        self._refresh()
        assert self._progress is not None
        return self._progress
