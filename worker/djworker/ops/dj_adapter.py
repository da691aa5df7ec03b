"""Runs DataJuicer's own ops on our Arrow batches when `py-data-juicer` is installed.

An op name that is not native resolves here: DataJuicer's Mappers and Filters
(model-based ones included) run per batch through their public batched/single
methods, with DataJuicer's `__dj__stats__` column carried in our struct column.
Its Deduplicators, Selectors and Groupers are not adapted: they need the whole
dataset, which our global stage provides only for native deduplicators and selectors.

Cost: DataJuicer may try to pip/uv-install missing packages at run time (its
LazyLoader). We switch that off when the adapter loads and fail with a clear
message instead, so a job never mutates its environment mid-run."""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Optional

import pyarrow as pa
from pydantic import Field

from ..errors import RecipeError
from .base import STATS_COLUMN, Op

STATS = STATS_COLUMN


@lru_cache(maxsize=1)
def datajuicer_registry() -> Optional[Any]:
    """DataJuicer's OPERATORS registry, or None when the extra is not installed."""
    try:
        from data_juicer.ops import OPERATORS
        from data_juicer.utils import lazy_loader
    except ImportError:
        return None

    def refuse(package_spec: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"DataJuicer wanted to install {package_spec!r} at run time; auto-install is disabled "
                           f"in datajuicer-ft: install it in the image (pip install {package_spec}) and rerun")

    lazy_loader.LazyLoader._install_package = classmethod(lambda cls, spec, pip_args=None: refuse(spec))
    return OPERATORS


def resolve_datajuicer_op(name: str, args: dict[str, Any], where: str) -> Optional[Op]:
    registry = datajuicer_registry()
    if registry is None or name not in registry.modules:
        return None
    from data_juicer.ops.base_op import Filter as DJFilter, Mapper as DJMapper

    cls = registry.modules[name]
    if not issubclass(cls, (DJMapper, DJFilter)):
        raise RecipeError(f"{where}: DataJuicer op {name!r} is a {cls.__mro__[1].__name__}; only its mappers and "
                          "filters run through the adapter (use the native document_*_deduplicator ops)")
    try:
        op = DataJuicerOp(dj_name=name, dj_args=args)
        op.instance()  # construct once now, so bad args fail at validation time
    except RecipeError:
        raise
    except Exception as err:
        raise RecipeError(f"{where}.{name}: DataJuicer rejected the op: {type(err).__name__}: {err}") from None
    return op


@lru_cache(maxsize=64)
def _instance(name: str, frozen_args: str) -> Any:
    import json

    registry = datajuicer_registry()
    return registry.modules[name](**json.loads(frozen_args))


class DataJuicerOp(Op):
    """A DataJuicer Mapper or Filter, run batch by batch on our tables."""

    dj_name: str
    dj_args: dict[str, Any] = Field(default_factory=dict)

    @property
    def op_name(self) -> str:  # type: ignore[override]
        return self.dj_name

    def params(self) -> dict[str, Any]:
        return {"datajuicer": self.dj_name, **self.dj_args}

    def instance(self) -> Any:
        import json

        return _instance(self.dj_name, json.dumps(self.dj_args, sort_keys=True, default=str))

    def process(self, table: pa.Table) -> pa.Table:
        from data_juicer.ops.base_op import Filter as DJFilter

        op = self.instance()
        rows = table.to_pylist()
        if isinstance(op, DJFilter):
            return self._filter(op, table, rows)
        return pa.Table.from_pylist(self._map(op, rows))

    def _map(self, op: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if op.is_batched_op():
            batch = {k: [r.get(k) for r in rows] for k in (rows[0] if rows else {})}
            out = op.process_batched(batch)
            keys = list(out)
            return [dict(zip(keys, values)) for values in zip(*(out[k] for k in keys))]
        return [op.process_single(dict(r)) for r in rows]

    def _filter(self, op: Any, table: pa.Table, rows: list[dict[str, Any]]) -> pa.Table:
        for r in rows:
            r[STATS] = {k: v for k, v in (r.get(STATS) or {}).items() if v is not None}
        if op.is_batched_op():
            batch = {k: [r.get(k) for r in rows] for k in (rows[0] if rows else {})}
            batch = op.compute_stats_batched(batch)
            keep = list(op.process_batched(batch))
            stats = batch[STATS]
        else:
            stats, keep = [], []
            for r in rows:
                r = op.compute_stats_single(r)
                stats.append(r[STATS])
                keep.append(bool(op.process_single(r)))
        kept = [dict(r, **{STATS: s}) for r, s, k in zip(rows, stats, keep) if k]
        return pa.Table.from_pylist(kept) if kept else table.slice(0, 0)
