"""Auto-sized partitions (`partition.auto_configure: true`): rows per partition from a sample.

`decide` is the pure core: sample facts, the op mix, memory and CPUs in; a size and
its reasons out. It starts from DataJuicer's per-modality table and only ever shrinks:
  - the op mix: long or media-heavy pipelines hold more per row, so get fewer rows;
  - memory: a partition's working set (Arrow bytes x modality multiplier x copies an
    op and a checkpoint hold, plus decoded media) must fit a worker's share;
  - fault isolation and parallelism: at least PARTITIONS_PER_WORKER partitions per
    worker and never fewer than MIN_PARTITIONS, so a failure redoes little and no
    worker idles while another finishes a giant partition.
`choose_partition_size` is the shell: it reservoir-samples a bounded prefix of the
input (never the whole of a big dataset: the planner reads it once afterwards) and
estimates the row count from file sizes."""
from __future__ import annotations

import math
import posixpath
import random
import zlib
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import psutil

from .sources import input_files, iter_records, slice_table
from .storage import Storage

MiB = 1024 * 1024


@dataclass(frozen=True)
class Modality:
    default: int
    max: int
    memory_multiplier: float


# DataJuicer's table (fault-tolerance guide, "Modality-Specific Optimizations").
MODALITIES = {
    "text": Modality(200, 1000, 1.0),
    "image": Modality(50, 200, 5.0),
    "audio": Modality(30, 100, 8.0),
    "video": Modality(10, 50, 20.0),
    "multimodal": Modality(20, 100, 10.0),
}
MEDIA_KEYS = {"images": "image", "image": "image", "audios": "audio", "audio": "audio", "videos": "video", "video": "video"}
MEDIA_EXTENSIONS = {
    "image": (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"),
    "audio": (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus"),
    "video": (".mp4", ".avi", ".mov", ".mkv", ".webm", ".flv", ".m4v"),
}
# A decoded media item in a worker's memory, order of magnitude (a 1080p RGB frame is 6 MiB).
DECODED_BYTES = {"image": 8 * MiB, "audio": 16 * MiB, "video": 256 * MiB}
MEDIA_PRESENCE = 0.05      # a kind counts when at least this share of sampled rows carries it
WORKING_COPIES = 3         # op input + op output + the checkpoint's encode buffer
MEMORY_FRACTION = 0.5      # of available memory, shared by the concurrent partitions
PARTITIONS_PER_WORKER = 4
MIN_PARTITIONS = 8
BASELINE_OP_COST = 6.0     # a pipeline up to this cost keeps the modality default
COST_SHRINK = 0.1          # each cost unit beyond the baseline takes 10% off
MAX_PARTITION_MB = 256.0
SAMPLE_ROWS = 1000
SAMPLE_BYTES = 16 * MiB
MAX_SAMPLED_FILES = 16
COMPRESSED_RATIO = 4.0     # assumed for .gz/.zst inputs: their sizes are compressed bytes


@dataclass(frozen=True)
class SampleStats:
    """Facts from a sample of valid rows."""

    rows: int
    arrow_bytes_per_row: float
    raw_bytes_per_row: float
    modality: str
    media_per_row: dict[str, float] = field(default_factory=dict)
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Choice:
    size: int
    max_size_mb: float
    modality: str
    reason: str
    factors: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"size": self.size, "max_size_mb": self.max_size_mb, "modality": self.modality,
                "reason": self.reason, **self.factors}


# ---- pure core --------------------------------------------------------------
def media_kind(value: Any) -> Optional[str]:
    if not isinstance(value, str):
        return None
    ext = posixpath.splitext(value.split("?", 1)[0].lower())[1]
    return next((kind for kind, exts in MEDIA_EXTENSIONS.items() if ext in exts), None)


def media_counts(row: dict[str, Any], text_key: str) -> dict[str, int]:
    """Media items a row refers to: DataJuicer's images/audios/videos keys, or any field holding
    media paths. The text field is not looked at: a URL in prose is not an attachment."""
    counts: dict[str, int] = {}
    for key, value in row.items():
        if key == text_key:
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            kind = MEDIA_KEYS.get(key) if isinstance(item, str) and item else None
            kind = media_kind(item) or kind
            if kind:
                counts[kind] = counts.get(kind, 0) + 1
    return counts


def detect_modality(rows: Sequence[dict[str, Any]], text_key: str) -> tuple[str, dict[str, float]]:
    """(modality, mean media items per row by kind). More than one media kind is multimodal."""
    if not rows:
        return "text", {}
    present: dict[str, int] = {}
    totals: dict[str, int] = {}
    for row in rows:
        for kind, n in media_counts(row, text_key).items():
            present[kind] = present.get(kind, 0) + 1
            totals[kind] = totals.get(kind, 0) + n
    kinds = sorted(k for k, n in present.items() if n / len(rows) >= MEDIA_PRESENCE)
    per_row = {k: totals[k] / len(rows) for k in kinds}
    if not kinds:
        return "text", {}
    return (kinds[0] if len(kinds) == 1 else "multimodal"), per_row


def op_cost(name: str) -> float:
    """Relative per-row weight of an op: media ops decode, deduplicators hash every row."""
    if name.startswith("video_"):
        return 4.0
    if name.startswith(("image_", "audio_")):
        return 2.0
    if name.endswith("deduplicator"):
        return 1.5
    if name.endswith("filter"):
        return 0.5
    return 1.0


def decide(stats: SampleStats, op_names: Sequence[str], mem_bytes: int, cpus: int, total_rows_estimate: int) -> Choice:
    """Rows per partition: the modality default, shrunk by op mix, memory, isolation and parallelism."""
    profile = MODALITIES[stats.modality]
    cpus = max(1, cpus)
    cost = sum(op_cost(n) for n in op_names)
    complexity = 1.0 + max(0.0, cost - BASELINE_OP_COST) * COST_SHRINK
    by_ops = max(1, int(profile.default / complexity))
    decoded = sum(n * DECODED_BYTES[k] for k, n in stats.media_per_row.items())
    row_bytes = max(1.0, stats.arrow_bytes_per_row * profile.memory_multiplier * WORKING_COPIES + decoded)
    budget = mem_bytes * MEMORY_FRACTION / cpus
    by_memory = max(1, int(budget // row_bytes))
    min_partitions = max(MIN_PARTITIONS, PARTITIONS_PER_WORKER * cpus)
    by_parallelism = max(1, total_rows_estimate // min_partitions)
    limits = {"modality_max": profile.max, "op_mix": by_ops, "memory": by_memory, "parallelism": by_parallelism}
    binding = min(limits, key=lambda k: (limits[k], list(limits).index(k)))
    size = limits[binding]
    max_mb = round(min(MAX_PARTITION_MB, max(1.0, budget / (profile.memory_multiplier * WORKING_COPIES) / MiB)), 1)
    reason = _reason(stats, profile, cost, by_ops, by_memory, budget, cpus, total_rows_estimate, min_partitions,
                     binding, size)
    factors = {
        "binding": binding, "limits": limits, "modality_default": profile.default, "modality_max": profile.max,
        "memory_multiplier": profile.memory_multiplier, "sample_rows": stats.rows,
        "arrow_bytes_per_row": round(stats.arrow_bytes_per_row, 1), "raw_bytes_per_row": round(stats.raw_bytes_per_row, 1),
        "media_per_row": stats.media_per_row, "fields": list(stats.fields), "op_cost": cost,
        "complexity_factor": round(complexity, 3), "working_bytes_per_row": int(row_bytes),
        "mem_bytes": int(mem_bytes), "cpus": cpus, "memory_budget_per_worker": int(budget),
        "total_rows_estimate": int(total_rows_estimate), "min_partitions": min_partitions,
        "expected_partitions": math.ceil(total_rows_estimate / size) if total_rows_estimate else 0,
    }
    return Choice(size, max_mb, stats.modality, reason, factors)


def _reason(stats, profile, cost, by_ops, by_memory, budget, cpus, total, min_partitions, binding, size) -> str:
    why = {
        "modality_max": f"the {stats.modality} maximum",
        "op_mix": f"the {stats.modality} default {profile.default}" + (
            f" shrunk for an op mix of cost {cost:g}" if by_ops < profile.default else ""),
        "memory": f"memory: {budget / MiB:.0f} MiB per worker fits {by_memory} rows of "
                  f"~{stats.arrow_bytes_per_row:.0f} B (x{profile.memory_multiplier:g})",
        "parallelism": f"~{total} rows need >= {min_partitions} partitions for {cpus} workers",
    }[binding]
    return f"{stats.modality} data, {size} rows per partition: {why}"


def summarize(rows: Sequence[dict[str, Any]], raw_bytes_per_row: float, arrow_bytes: int, text_key: str) -> SampleStats:
    modality, per_row = detect_modality(rows, text_key)
    fields = tuple(sorted({k for r in rows for k in r}))
    return SampleStats(len(rows), arrow_bytes / max(1, len(rows)), raw_bytes_per_row, modality, per_row, fields)


def estimate_rows(files: Sequence[dict[str, Any]], counted: dict[str, int], raw_bytes_per_row: float) -> int:
    """Rows in the input: exact for files read to the end, from bytes for the rest."""
    total = 0
    for f in files:
        if f["path"] in counted:
            total += counted[f["path"]]
            continue
        size = f["size"] * (COMPRESSED_RATIO if f["path"].endswith((".gz", ".zst")) else 1.0)
        total += int(size / max(1.0, raw_bytes_per_row))
    return total


# ---- shell ------------------------------------------------------------------
def sample_input(storage: Storage, files: Sequence[dict[str, Any]], text_key: str, k: int = SAMPLE_ROWS,
                 byte_budget: int = SAMPLE_BYTES, seed: int = 0) -> tuple[SampleStats, int]:
    """A reservoir sample of up to k valid rows from at most byte_budget bytes of input, spread
    over up to MAX_SAMPLED_FILES files, and the estimated total row count."""
    rng = random.Random(seed)
    step = max(1, math.ceil(len(files) / MAX_SAMPLED_FILES))
    chosen = list(files)[::step]
    per_file = max(1, byte_budget // len(chosen))
    reservoir: list[tuple[bytes, dict[str, Any]]] = []  # (raw line, parsed row)
    seen = raw_total = 0
    counted: dict[str, int] = {}
    for f in chosen:
        read = rows_here = 0
        finished = True
        for _, raw, row, reason in iter_records(storage, f["path"], text_key):
            read += len(raw) + 1
            if reason is None:
                seen += 1
                rows_here += 1
                raw_total += len(raw) + 1
                if len(reservoir) < k:
                    reservoir.append((raw, row))
                elif (j := rng.randrange(seen)) < k:
                    reservoir[j] = (raw, row)
            if read >= per_file:
                finished = False
                break
        if finished:
            counted[f["path"]] = rows_here
    arrow_bytes = slice_table([raw for raw, _ in reservoir], text_key).nbytes if reservoir else 0
    raw_per_row = raw_total / max(1, seen)
    stats = summarize([row for _, row in reservoir], raw_per_row, arrow_bytes, text_key)
    return stats, estimate_rows(files, counted, raw_per_row)


def available_memory() -> int:
    """Available memory, capped by this container's cgroup limit (a pod's, under Kubernetes)."""
    avail = psutil.virtual_memory().available
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit():
            avail = min(avail, int(text))
    return avail


def choose_partition_size(storage: Storage, recipe: Any, mem_bytes: Optional[int] = None,
                          cpus: Optional[int] = None) -> Choice:
    """The engine's entry point: sample the recipe's input and decide for its ops and `np` workers."""
    files = input_files(storage, recipe.dataset_path)
    seed = zlib.crc32(recipe.dataset_path.encode())  # the same input samples the same rows
    stats, total = sample_input(storage, files, recipe.text_key, seed=seed)
    return decide(stats, [name for name, _ in recipe.ops], mem_bytes or available_memory(), cpus or recipe.np, total)

