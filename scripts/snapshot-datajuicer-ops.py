"""Writes worker/djworker/data/datajuicer_ops.json: every op of the installed py-data-juicer
with its type, modality and tags. Rerun after upgrading the pinned DataJuicer version, then
regenerate docs/datajuicer-compat.md (python -m djworker.compat --write-docs)."""
import json
import sys
from pathlib import Path

from data_juicer import __version__
from data_juicer.tools.op_search import OPSearcher

MEDIA = ("image", "video", "audio", "multimodal")
NAME_HINTS = {"img": "image", "sdxl": "image"}  # ops whose tags omit their modality


def modality(name: str, tags: list[str]) -> str:
    for m in MEDIA:
        if m in tags or m in name:
            return m
    for hint, m in NAME_HINTS.items():
        if hint in name:
            return m
    return "text"


ops = sorted(OPSearcher().all_ops.values(), key=lambda r: r.name)
out = {"datajuicer_version": __version__,
       "ops": [{"name": r.name, "type": r.type, "modality": modality(r.name, list(r.tags)),
                "tags": sorted(set(r.tags))} for r in ops]}
path = Path(__file__).resolve().parent.parent / "worker/djworker/data/datajuicer_ops.json"
path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
print(f"{len(ops)} ops of DataJuicer {__version__} -> {path}", file=sys.stderr)
