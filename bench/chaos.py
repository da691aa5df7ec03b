"""Chaos: SIGKILL a job again and again at random moments, resume it, and prove exactly-once.

The command line of the harness in tests/support/chaos.py (which says what it kills and what it
checks); tests/reliability/test_chaos.py runs the same harness with a handful of kills.

With --faults it runs the soak of tests/support/soak.py instead: the job's checkpoints and export
on moto's S3 behind a fault-injecting proxy, on a Ray cluster of process groups (--executor ray),
and --kills faults drawn at random from the list, one per run, each followed by a resume:
kill (a chaos kill), s3 (a burst of errors, or a 20-60 s outage), ray-node (a
worker node SIGKILLed mid-job, then a new one added), enospc (the event log's tmpfs full for a
few seconds; needs root), ray-head (not available until the engine detects a lost head).

    .venv/bin/python bench/chaos.py --kills 50                  # local executor, 300 partitions
    .venv/bin/python bench/chaos.py --kills 10 --executor ray --partitions 100
    .venv/bin/python bench/chaos.py --faults kill,s3,ray-node,enospc --kills 30 --executor ray --partitions 50 --rows-per-partition 200
"""
from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "worker"), str(REPO)]

from tests.support.chaos import KINDS, chaos  # noqa: E402
from tests.support.soak import FAULTS, RAY_FAULTS, parse_faults, soak  # noqa: E402


def snapshot(ref: str, dest: Path) -> Path:
    """worker/ as of a git ref, for long runs in a tree that someone keeps editing."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "worker/djworker"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "worker"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=50, help="kills, or with --faults the faults to inject")
    p.add_argument("--faults", metavar="LIST", help=f"the soak: comma list of {', '.join(FAULTS)}")
    p.add_argument("--workers", type=int, default=2, help="--faults on Ray: worker nodes besides the head")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--partitions", type=int, default=300)
    p.add_argument("--rows-per-partition", type=int, default=10)
    p.add_argument("--np", type=int, default=2)
    p.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma list of {', '.join(KINDS)}")
    p.add_argument("--dir", help="work here (kept); default a temporary directory, removed on success")
    p.add_argument("--code", metavar="GIT_REF", help="run dj-process from worker/ as of this git ref (default: the tree)")
    p.add_argument("--intermediate", metavar="FORMAT[:CODEC]", help="intermediate_storage format and compression, "
                   "e.g. jsonl:gzip (default: the recipe default, parquet:zstd)")
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: unmount, stop the cluster and servers
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    kinds = tuple(k for k in a.kinds.split(",") if k)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        p.error(f"unknown kinds {sorted(unknown)}")
    faults = None
    if a.faults:
        try:
            faults = parse_faults(a.faults)
            if a.executor != "ray" and set(faults) & set(RAY_FAULTS):
                raise ValueError(f"{', '.join(sorted(set(faults) & set(RAY_FAULTS)))} need --executor ray")
        except ValueError as err:
            p.error(str(err))
    root = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="dj-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    code = snapshot(a.code, root / "code") if a.code else None
    if faults:
        print(f"soak: {a.kills} faults from {','.join(faults)}, executor {a.executor}, seed {seed}, in {root}", flush=True)
        tally = soak(root, a.kills, faults, a.executor, a.partitions, a.rows_per_partition, a.np, seed, a.workers,
                     log=lambda s: print(s, flush=True), code=code)
        print(tally.render())
        if tally.ok and not a.dir:
            shutil.rmtree(root, ignore_errors=True)
        return 0 if tally.ok else 1
    print(f"chaos: {a.kills} kills, executor {a.executor}, seed {seed}, in {root}" + (f", code at {a.code}" if code else "")
          + (f", intermediate {a.intermediate}" if a.intermediate else ""))
    intermediate = None
    if a.intermediate:
        fmt, _, codec = a.intermediate.partition(":")
        intermediate = {"format": fmt, **({"compression": codec} if codec else {})}
    tally = chaos(root, a.kills, a.executor, a.partitions, a.rows_per_partition, a.np, seed, kinds, code=code,
                  intermediate=intermediate)
    print(tally.render())
    if tally.ok and not a.dir:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if tally.ok else 1


if __name__ == "__main__":
    sys.exit(main())
