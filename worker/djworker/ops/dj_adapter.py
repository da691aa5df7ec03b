"""Resolves an op name that is not native to DataJuicer's own op, if installed."""
from __future__ import annotations

from typing import Any, Optional


def resolve_datajuicer_op(name: str, args: dict[str, Any], where: str) -> Optional[Any]:
    return None
