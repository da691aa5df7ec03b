"""DataJuicer 1.6.1's op catalogue (name, type, modality, tags), from the bundled snapshot."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

MEDIA = ("image", "video", "audio", "multimodal")
SNAPSHOT = Path(__file__).parent / "data" / "datajuicer_ops.json"


@lru_cache(maxsize=1)
def datajuicer_ops() -> dict[str, dict[str, Any]]:
    """DataJuicer's ops by name."""
    return {op["name"]: op for op in json.loads(SNAPSHOT.read_text(encoding="utf-8"))["ops"]}


def datajuicer_version() -> str:
    return json.loads(SNAPSHOT.read_text(encoding="utf-8"))["datajuicer_version"]
