"""Filters on other sample fields: file suffix and a dotted field's value.

DataJuicer runs these one sample at a time; they keep no cross-row state, so a
whole table gives the same per-row answers."""
from __future__ import annotations

from typing import Any, Union

import pyarrow as pa
import pyarrow.compute as pc

from ..sources import SUFFIX_COLUMN  # the input reader adds it, as DataJuicer's loader does
from .base import Filter, register
from .text_utils import stat_column


@register("suffix_filter")
class SuffixFilter(Filter):
    """Keeps rows whose __dj__suffix__ equals one of `suffixes` exactly (case-sensitive,
    no dot normalisation); an empty list keeps everything. Records no stats."""

    suffixes: Union[str, list[str], None] = []

    def suffix_list(self) -> list[str]:
        if self.suffixes is None:
            return []
        return [self.suffixes] if isinstance(self.suffixes, str) else list(self.suffixes)

    def keep(self, table: pa.Table, stats: dict[str, pa.Array]) -> pa.Array:
        wanted = self.suffix_list()
        if not wanted:
            return pa.array([True] * table.num_rows, pa.bool_())
        if SUFFIX_COLUMN not in table.column_names:
            raise KeyError(f"{self.op_name}: input has no {SUFFIX_COLUMN!r} column to test the suffixes against")
        hit = pc.fill_null(pc.is_in(table.column(SUFFIX_COLUMN), value_set=pa.array(wanted, pa.string())), False)
        return pc.invert(hit) if self.reversed_range else hit


@register("specified_field_filter")
class SpecifiedFieldFilter(Filter):
    """Keeps rows whose `field_key` value (a list: every element) is in `target_value`.

    The stat key is the dotted field_key itself. A missing key raises, as DJ's
    assertion does; with the default field_key='' that is every row."""

    field_key: str = ""
    target_value: list[Any] = []

    def field_values(self, table: pa.Table) -> pa.Array:
        """The value at field_key per row, walking struct columns along the dotted path."""
        keys = self.field_key.split(".")
        if keys[0] not in table.column_names:
            raise KeyError(f"{self.op_name}: field {self.field_key!r}: {keys[0]!r} not in {table.column_names}")
        values = table.column(keys[0]).combine_chunks()
        for depth, key in enumerate(keys[1:], start=1):
            parent = ".".join(keys[:depth])
            if not pa.types.is_struct(values.type) or values.type.get_field_index(key) < 0:
                have = [f.name for f in values.type] if pa.types.is_struct(values.type) else str(values.type)
                raise KeyError(f"{self.op_name}: field {self.field_key!r}: {key!r} not in {parent!r} (has {have})")
            if values.null_count:
                nulls = values.null_count
                raise KeyError(f"{self.op_name}: field {self.field_key!r}: {parent!r} is null in {nulls} rows")
            values = pc.struct_field(values, key)
        return values

    def compute_stats(self, table: pa.Table) -> dict[str, pa.Array]:
        if stat_column(table, self.field_key) is not None:
            return {}
        return {self.field_key: self.field_values(table)}

    def keep(self, table: pa.Table, stats: dict[str, pa.Array]) -> pa.Array:
        if not (self.field_key and self.target_value):
            return pa.array([True] * table.num_rows, pa.bool_())
        keep = [self.matches(v) for v in stat_column(table, self.field_key).to_pylist()]
        return pa.array([not k for k in keep] if self.reversed_range else keep, pa.bool_())

    def matches(self, value: Any) -> bool:
        values = value if isinstance(value, (list, tuple)) else [value]
        return all(v in self.target_value for v in values)
