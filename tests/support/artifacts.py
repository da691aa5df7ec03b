"""JobFiles: what one job left behind, read the way a user would find it.

Where each file lives comes from djworker's JobPaths (the only place that names them) and the
event log is read through djworker.events, so no test spells out the on-disk layout."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import orjson

from djworker.checkpoint import keys_by_partition, manifest_name
from djworker.events import log_files, read_events
from djworker.jobs.paths import JobPaths
from djworker.storage import Storage, join

# An event line that does not parse (a writer killed mid-line), as events(torn="mark") shows it.
TORN = "__TORN__"


@dataclass(frozen=True)
class JobFiles:
    paths: JobPaths

    # ---- finding a job --------------------------------------------------------------------
    @classmethod
    def of(cls, job_id: str, work_dir: str | Path, event_log_dir: Optional[str | Path] = None,
           checkpoint_dir: Optional[str | Path] = None) -> "JobFiles":
        """The files of job_id for a recipe with these directories (None: the recipe's default)."""
        recipe = SimpleNamespace(work_dir=str(work_dir), event_log_dir=str(event_log_dir) if event_log_dir else None,
                                 checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None)
        return cls(JobPaths.of(recipe, job_id))

    @classmethod
    def for_recipe(cls, recipe: str | Path, job_id: str) -> "JobFiles":
        """The files of job_id as run from this recipe file."""
        from djworker.config import load_recipe

        return cls(JobPaths.of(load_recipe(recipe, check_ops=False), job_id))

    @property
    def job_id(self) -> str:
        return self.paths.job_id

    @property
    def job_dir(self) -> Path:
        return Path(self.paths.job_dir)

    # ---- the event log --------------------------------------------------------------------
    def events(self, torn: str = "fail") -> list[dict[str, Any]]:
        """Every event of the job, in order across rotations. A line that does not parse fails the
        test naming it (torn="fail", for a job that has ended), or becomes {"event_type": TORN}
        (torn="mark", to check where a killed writer left one). No log yet: no events."""
        out: list[dict[str, Any]] = []
        for file in log_files(self.paths.event_dir):
            with open(file, "rb") as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        out.append(orjson.loads(line))
                    except orjson.JSONDecodeError:
                        if torn != "mark":
                            raise AssertionError(f"{file}:{n} is not a JSON event: {line[:200]!r}") from None
                        out.append({"event_type": TORN})
        return out

    def events_so_far(self) -> list[dict[str, Any]]:
        """The events of a running job: none before its log exists, and not a line it is mid-writing."""
        try:
            return list(read_events(self.paths.event_dir))
        except FileNotFoundError:  # rotated between listing and opening: the next poll sees it
            return []

    def event_types(self) -> list[str]:
        return [e["event_type"] for e in self.events()]

    @property
    def events_file(self) -> Path:
        return Path(self.paths.events_file)

    def event_prose(self) -> str:
        """events.log, the event log's human-readable twin."""
        return (Path(self.paths.event_dir) / "events.log").read_text()

    # ---- the job directory ------------------------------------------------------------------
    @property
    def summary_path(self) -> Path:
        return Path(self.paths.summary)

    def summary(self) -> dict[str, Any]:
        """job_summary.json (fails if the job never wrote one)."""
        return orjson.loads(self.summary_path.read_bytes())

    def plan(self) -> Optional[dict[str, Any]]:
        """metadata/dataset_mapping.json, or None before the job planned."""
        return _json(Storage(), self.paths.mapping)

    def report(self) -> Optional[dict[str, Any]]:
        """metadata/final_mapping_report.json, or None before the job ended."""
        return _json(Storage(), self.paths.final_report)

    def rejects(self) -> list[dict[str, Any]]:
        """The malformed input records the job set aside (rejects/rejects.jsonl)."""
        data = _bytes(Storage(), self.paths.rejects) or b""
        return [orjson.loads(line) for line in data.splitlines() if line.strip()]

    # ---- checkpoints ------------------------------------------------------------------------
    def checkpoints(self) -> list[dict[str, Any]]:
        """The manifest of every complete checkpoint (one exists exactly when its manifest does)."""
        storage = Storage()
        root = self.paths.checkpoint_root
        keys = keys_by_partition(storage.listdir(root, "checkpoint_partition_"))
        return [orjson.loads(storage.read_bytes(join(root, manifest_name(key))))
                for pid in sorted(keys) for key in sorted(keys[pid])]

    def checkpointed_ops(self) -> dict[int, set[int]]:
        """partition id -> the op counts it has a checkpoint after."""
        found: dict[int, set[int]] = {}
        for manifest in self.checkpoints():
            found.setdefault(manifest["partition_id"], set()).add(manifest["upto"])
        return found


def output_rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def _bytes(storage: Storage, uri: str) -> Optional[bytes]:
    try:
        return storage.read_bytes(uri)
    except FileNotFoundError:
        return None


def _json(storage: Storage, uri: str) -> Optional[dict[str, Any]]:
    data = _bytes(storage, uri)
    return orjson.loads(data) if data is not None else None
