"""Failpoints for crash testing, in the style of etcd's gofail: off unless DJ_FAILPOINTS is set.

`DJ_FAILPOINTS="checkpoint_mid_write=3,export_mid_write=1"` SIGKILLs the process
(the whole process group for the driver-side points) the Nth time that point is
reached in that process. Points: op_done, checkpoint_mid_write, export_mid_write,
partition_done, dedup_decide. Reading the variable once keeps the hot path to a dict lookup."""
from __future__ import annotations

import os
import signal

_SPEC = {k: int(v) for k, _, v in (p.partition("=") for p in os.environ.get("DJ_FAILPOINTS", "").split(",") if p)}
_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    if not _SPEC or name not in _SPEC:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == _SPEC[name]:
        os.killpg(os.getpgid(0), signal.SIGKILL)
