"""Job bookkeeping, one module per file a job owns: paths, summary, lock, STOP request, liveness,
and the read side (reader, monitor, stopper). This package imports nothing from cli/."""
from __future__ import annotations

from .liveness import (LOCK_TTL_S, MARKER_ENV, DriverState, driver_marker, driver_state, process_identity)
from .lock import JobLock
from .paths import DEFAULT_WORK_DIR, JobPaths, new_job_id
from .summary import JobSummary, Retention, read_summary, resumption_command, write_summary

__all__ = ["LOCK_TTL_S", "MARKER_ENV", "DriverState", "driver_marker", "driver_state", "process_identity", "JobLock",
           "DEFAULT_WORK_DIR", "JobPaths", "new_job_id", "JobSummary", "Retention", "read_summary",
           "resumption_command", "write_summary"]
