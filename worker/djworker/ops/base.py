"""The op contract: a frozen pydantic model per op, one verb over an Arrow table.

The recipe's args become the model's fields, so a misspelt parameter is an error
that names the key, and `params()` feeds the checkpoint key. Ops do no I/O, no
logging and hold no globals; an op that cannot process a batch raises, and the
partition is retried. Nothing is dropped silently."""
from __future__ import annotations

from typing import Any, ClassVar, Optional

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from .registry import register  # noqa: F401  (ops import it from here)

STATS_COLUMN = "__dj__stats__"

class Op(BaseModel):
    """Base of every op. DataJuicer's base kwargs are accepted so recipes run unchanged."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    op_name: ClassVar[str] = ""

    text_key: str = "text"
    # DataJuicer executor knobs: accepted for compatibility, not part of the semantics.
    batch_size: Optional[int] = None
    num_proc: Optional[int] = None
    skip_op_error: Optional[bool] = None
    accelerator: Optional[str] = None
    cpu_required: Optional[float] = None
    mem_required: Optional[Any] = None

    _EXECUTION_KNOBS: ClassVar[frozenset[str]] = frozenset(
        {"batch_size", "num_proc", "skip_op_error", "accelerator", "cpu_required", "mem_required"}
    )

    def params(self) -> dict[str, Any]:
        """The args that decide this op's output (checkpoint keys hash these)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in self._EXECUTION_KNOBS}

    def process(self, table: pa.Table) -> pa.Table:
        raise NotImplementedError

    def warm_up(self) -> None:
        """One-time set-up worth doing before the first partition (tables, patterns).
        Local workers call it right after they start, while the driver plans."""

    def texts(self, table: pa.Table) -> pa.ChunkedArray:
        if self.text_key not in table.column_names:
            raise KeyError(f"{self.op_name}: input has no text column {self.text_key!r}")
        return table.column(self.text_key)


class Mapper(Op):
    """Rewrites the text column; subclasses give either map_text or map_column. One that
    changes the row count (one sample into several) overrides process instead."""

    def map_text(self, text: str) -> str:
        raise NotImplementedError

    def map_column(self, texts: pa.ChunkedArray) -> pa.Array:
        return pa.array([None if t is None else self.map_text(t) for t in texts.to_pylist()], pa.string())

    def process(self, table: pa.Table) -> pa.Table:
        column = self.map_column(self.texts(table))
        index = table.column_names.index(self.text_key)
        return table.set_column(index, self.text_key, column)


class Filter(Op):
    """Computes per-row stats into __dj__stats__, then keeps rows by the shared keep rule."""

    min_closed_interval: bool = True
    max_closed_interval: bool = True
    reversed_range: bool = False

    def compute_stats(self, table: pa.Table) -> dict[str, pa.Array]:
        """Stat columns under DataJuicer's stat keys (e.g. text_len), one value per row."""
        return {}

    def keep(self, table: pa.Table, stats: dict[str, pa.Array]) -> pa.Array:
        raise NotImplementedError

    def in_range(self, values: pa.Array, lo: Optional[float], hi: Optional[float]) -> pa.Array:
        """DataJuicer's keep rule: reversed flips closedness, then negates."""
        lo_closed, hi_closed = self.min_closed_interval, self.max_closed_interval
        if self.reversed_range:
            lo_closed, hi_closed = not lo_closed, not hi_closed
        ok = pa.array([True] * len(values), pa.bool_())
        if lo is not None:
            ok = pc.and_(ok, (pc.greater_equal if lo_closed else pc.greater)(values, lo))
        if hi is not None:
            ok = pc.and_(ok, (pc.less_equal if hi_closed else pc.less)(values, hi))
        return pc.invert(ok) if self.reversed_range else ok

    def judge(self, table: pa.Table) -> tuple[pa.Table, pa.Array]:
        """The rows with this filter's stats merged in, and which of them are kept (never null)."""
        stats = self.compute_stats(table)
        if stats:
            table = merge_stats(table, stats)
        return table, pc.fill_null(self.keep(table, stats), False)

    def process(self, table: pa.Table) -> pa.Table:
        table, keep = self.judge(table)
        return table.filter(keep)


class GlobalOp(Op):
    """Whole-dataset op: each partition gives `row_keys` (what the decision needs of each
    row), then one global `drops` sees every partition's keys in input order and returns,
    per partition, the row positions to drop. Rows are only ever dropped, never reordered."""

    global_label: ClassVar[str] = "selection"  # what the global step is called in events

    def row_keys(self, table: pa.Table) -> pa.Array:
        raise NotImplementedError

    def drops(self, keys: list[pa.Array]) -> list[list[int]]:
        raise NotImplementedError

    def process(self, table: pa.Table) -> pa.Table:
        """The op over one table (what DataJuicer does on a whole dataset)."""
        drop = set(self.drops([self.row_keys(table)])[0])
        keep = [i not in drop for i in range(table.num_rows)]
        return table.filter(pa.array(keep, pa.bool_()))


class Deduplicator(GlobalOp):
    """Global op whose row keys are hashes: the first member of a group survives.

    `hash_column` names DataJuicer's hash column; `hashes` computes it for a table;
    `duplicates` takes every partition's hashes in input order and returns, per
    partition, the row positions to drop."""

    hash_column: ClassVar[str] = "__dj__hash"
    global_label: ClassVar[str] = "deduplication"

    def hashes(self, table: pa.Table) -> pa.Array:
        raise NotImplementedError

    def duplicates(self, hashes: list[pa.Array]) -> list[list[int]]:
        raise NotImplementedError

    def row_keys(self, table: pa.Table) -> pa.Array:
        return self.hashes(table)

    def drops(self, keys: list[pa.Array]) -> list[list[int]]:
        return self.duplicates(keys)

    def groups(self, hashes: list[pa.Array]) -> "np.ndarray":
        """Per row (in global input order), the index of the first row of its duplicate group:
        the row itself when it survives. The tracer's duplicate pairs come from this."""
        raise NotImplementedError


class Selector(GlobalOp):
    """Global op that keeps a subset of the rows chosen over the whole dataset (DataJuicer's
    selectors). DataJuicer's output is in the selection's order; here rows keep input order."""


def merge_stats(table: pa.Table, stats: dict[str, pa.Array]) -> pa.Table:
    """Add stat fields to the __dj__stats__ struct column, keeping fields already there."""
    fields: dict[str, pa.Array] = {}
    if STATS_COLUMN in table.column_names:
        old = table.column(STATS_COLUMN).combine_chunks()
        for i, field in enumerate(old.type):
            fields[field.name] = old.field(i)
    for key, values in stats.items():
        fields.setdefault(key, values)  # DJ trusts a stat already present
    struct = pa.StructArray.from_arrays(list(fields.values()), names=list(fields.keys()))
    if STATS_COLUMN in table.column_names:
        return table.set_column(table.column_names.index(STATS_COLUMN), STATS_COLUMN, struct)
    return table.append_column(STATS_COLUMN, struct)
