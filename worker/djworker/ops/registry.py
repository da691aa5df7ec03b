"""The op table: DataJuicer op name -> op class, filled by the @register decorator as families import."""
from __future__ import annotations

from typing import Any

_REGISTRY: dict[str, type[Any]] = {}


def register(name: str):
    """Class decorator: make an op available to recipes under DataJuicer's name."""

    def wrap(cls: type[Any]) -> type[Any]:
        cls.op_name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def registered() -> dict[str, type[Any]]:
    """The ops registered so far (catalog.registered_ops loads every family first)."""
    return dict(_REGISTRY)
