"""Selectors: DataJuicer's whole-dataset subset ops, run as a global stage like the deduplicators.

Each partition hands over only what the decision needs of its rows (`row_keys`: the value
at `field_key`, or nothing for random_selector); `drops` then sees every row in global
input order and picks exactly the rows DataJuicer's selector picks over the same dataset.
DataJuicer returns the selection in its own order (by value, by group, shuffled); here the
kept rows stay in input order, as everywhere else in the engine. Ties are broken as
DataJuicer breaks them (the earlier row wins), because the same heapq and sort calls see the
rows in the same order."""
from __future__ import annotations

import heapq
import numbers
import sys
from itertools import chain
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, PositiveInt, model_validator
from typing_extensions import Annotated

from .base import Selector, register
from .dedup import split_drops

Ratio = Optional[Annotated[float, Field(ge=0, le=1)]]
ABSENT = pa.list_(pa.null())  # the row-key type of a partition whose rows lack the field


def keep_only(chosen: Optional[list[int]], sizes: list[int]) -> list[list[int]]:
    """Per partition, the positions to drop when the global rows `chosen` survive (None: all do)."""
    survives = np.ones(sum(sizes), bool)
    if chosen is not None:
        survives[:] = False
        survives[np.asarray(chosen, dtype=np.int64)] = True
    return split_drops(survives, sizes)


def stats_to_number(value: Any, reverse: bool = True) -> float:
    """DataJuicer's reading of a stat as a number: a numeric string, or the mean of a number or
    list; anything else (None, [], text, a dict) sorts last: -maxsize if reverse else maxsize."""
    try:
        if isinstance(value, str):
            return float(value)
        if value is None or (isinstance(value, list) and not value):
            raise ValueError("no value")
        return float(np.asarray(value).mean())
    except Exception:
        return -sys.maxsize if reverse else sys.maxsize


def select_count(ratio: Optional[float], count: Optional[int], base: int) -> Optional[float]:
    """How many to select from ratio * base and count, the smaller applying when both are
    set; a ratio of 0 counts as unset (DataJuicer tests it for truth). None: select all."""
    if not ratio:
        return count or None
    n = ratio * base
    return count if count and count < n else n


@register("random_selector")
class RandomSelector(Selector):
    """Keeps a random subset of select_num rows, or int(select_ratio * rows), the smaller when
    both are set. The subset is DataJuicer's: the first k of numpy's default_rng(seed)
    permutation of the dataset's row positions, seed 42 as in DataJuicer. It depends only on
    the seed and the number of rows reaching the op, in input order, so every executor,
    partitioning and resumed run keeps the same rows. A count of 0 keeps every row and one at
    or over the row count keeps every row once (DataJuicer repeats rows to reach it)."""

    select_ratio: Ratio = None
    select_num: Optional[PositiveInt] = None
    # Not a DataJuicer parameter: DataJuicer always uses 42.
    seed: int = 42

    @model_validator(mode="after")
    def _a_count(self):
        if self.select_ratio == 0 and self.select_num is None:  # DataJuicer fails on it at run time
            raise ValueError("select_ratio 0 without select_num selects nothing DataJuicer can run; "
                             "set select_num or a select_ratio above 0")
        return self

    def row_keys(self, table: pa.Table) -> pa.Array:
        return pa.nulls(table.num_rows)  # only the row count matters

    def chosen(self, rows: int) -> Optional[list[int]]:
        if rows <= 1 or (self.select_ratio is None and self.select_num is None):
            return None
        k = int(select_count(self.select_ratio, self.select_num, rows))
        if k <= 0 or k >= rows:
            return None
        return np.random.default_rng(self.seed).permutation(rows)[:k].tolist()

    def drops(self, keys: list[pa.Array]) -> list[list[int]]:
        sizes = [len(k) for k in keys]
        return keep_only(self.chosen(sum(sizes)), sizes)


class FieldSelector(Selector):
    """A selector over the value at `field_key` (dots walk into nested fields)."""

    field_key: str = ""

    def reads_field(self) -> bool:
        """Whether DataJuicer looks at the field at all with these params (else no field is needed)."""
        return bool(self.field_key)

    def row_keys(self, table: pa.Table) -> pa.Array:
        """Per row, [value] at field_key, or null where this partition's rows lack the field
        (another partition may have it: then those rows hold None, as in one dataset)."""
        absent = pa.nulls(table.num_rows, ABSENT)
        if not self.reads_field():
            return absent
        keys = self.field_key.split(".")
        if keys[0] not in table.column_names:
            return absent
        values = table.column(keys[0]).combine_chunks()
        for depth, key in enumerate(keys[1:], start=1):
            parent = ".".join(keys[:depth])
            if pa.types.is_null(values.type):
                return absent
            if not pa.types.is_struct(values.type):
                raise ValueError(f"{self.op_name}: field {self.field_key!r}: {parent!r} is not a mapping "
                                 f"({values.type}), so it has no key {key!r}")
            if values.null_count:
                raise ValueError(f"{self.op_name}: field {self.field_key!r}: {parent!r} is null in "
                                 f"{values.null_count} rows, so they have no {key!r}")
            if values.type.get_field_index(key) < 0:
                return absent
            values = pc.struct_field(values, key)
        offsets = pa.array(np.arange(len(values) + 1, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, values)

    def values(self, keys: list[pa.Array]) -> list[Any]:
        """Every row's value in input order; a field no row has is an error, as in DataJuicer."""
        out: list[Any] = []
        seen = False
        for part in keys:
            for wrapped in part.to_pylist():
                seen = seen or wrapped is not None
                out.append(None if wrapped is None else wrapped[0])
        if out and not seen:
            raise ValueError(f"{self.op_name}: field {self.field_key!r} is in no row of the dataset; "
                             "check field_key (nested keys are separated by '.')")
        return out

    def scalars(self, values: list[Any]) -> list[Any]:
        """DataJuicer accepts only strings, numbers and None where values are matched or counted."""
        for i, v in enumerate(values):
            if not (v is None or isinstance(v, (str, numbers.Number))):
                raise ValueError(f"{self.op_name}: field {self.field_key!r} of row {i} is a "
                                 f"{type(v).__name__} ({v!r:.80}); only strings, numbers and null can be selected on")
        return values

    def chosen(self, values: list[Any]) -> Optional[list[int]]:
        raise NotImplementedError

    def drops(self, keys: list[pa.Array]) -> list[list[int]]:
        sizes = [len(k) for k in keys]
        if sum(sizes) <= 1 or not self.reads_field():
            return keep_only(None, sizes)
        return keep_only(self.chosen(self.values(keys)), sizes)


def ordered(pick, n: int, values: list[Any], field_key: str, op_name: str) -> list[int]:
    """heapq's nlargest/nsmallest of row positions by value: ties go to the earlier row."""
    try:
        return pick(n, range(len(values)), values.__getitem__)
    except TypeError as err:
        raise ValueError(f"{op_name}: the values of field {field_key!r} cannot be ordered ({err}); "
                         "a top-level field is compared as it is, so it must not mix types or hold nulls") from None


@register("topk_specified_field_selector")
class TopkSpecifiedFieldSelector(FieldSelector):
    """Keeps the topk rows, or int(top_ratio * rows), the smaller when both are set, with the
    largest values (reverse=True) or the smallest. A nested field's values are read as numbers
    (stats_to_number; unreadable ones sort last); a top-level field's are compared as they are."""

    top_ratio: Ratio = None
    topk: Optional[PositiveInt] = None
    reverse: bool = True

    def reads_field(self) -> bool:
        return bool(self.field_key) and bool(self.top_ratio or self.topk)

    def chosen(self, values: list[Any]) -> Optional[list[int]]:
        n = int(select_count(self.top_ratio, self.topk, len(values)))
        if "." in self.field_key:
            values = [stats_to_number(v, self.reverse) for v in values]
        pick = heapq.nlargest if self.reverse else heapq.nsmallest
        return ordered(pick, n, values, self.field_key, self.op_name)


@register("range_specified_field_selector")
class RangeSpecifiedFieldSelector(FieldSelector):
    """Keeps the rows ranked (lower, upper] in ascending order of the field's value read as a
    number (stats_to_number). lower is max(int(lower_percentile * rows), lower_rank), upper is
    min(int(upper_percentile * rows), upper_rank), never below lower; either side unset keeps
    every row."""

    lower_percentile: Ratio = None
    upper_percentile: Ratio = None
    lower_rank: Optional[PositiveInt] = None
    upper_rank: Optional[PositiveInt] = None

    def reads_field(self) -> bool:
        return bool(self.field_key) and (self.lower_percentile is not None or self.lower_rank is not None) and \
            (self.upper_percentile is not None or self.upper_rank is not None)

    def bounds(self, rows: int) -> tuple[int, int]:
        lower, upper = 0, rows
        if self.lower_percentile is not None:
            lower = int(self.lower_percentile * rows)
        if self.lower_rank is not None:
            lower = max(lower, self.lower_rank)
        if self.upper_percentile is not None:
            upper = int(self.upper_percentile * rows)
        if self.upper_rank is not None:
            upper = min(upper, self.upper_rank)
        return lower, max(lower, upper)

    def chosen(self, values: list[Any]) -> Optional[list[int]]:
        lower, upper = self.bounds(len(values))
        numbers_ = [stats_to_number(v) for v in values]
        # DataJuicer's two steps: the `upper` smallest, then the largest upper-lower of those, which
        # it sees in the first step's order (so that order breaks the second step's ties)
        lowest = heapq.nsmallest(upper, range(len(numbers_)), numbers_.__getitem__)
        among = [numbers_[i] for i in lowest]
        return [lowest[j] for j in heapq.nlargest(upper - lower, range(len(among)), among.__getitem__)]


@register("frequency_specified_field_selector")
class FrequencySpecifiedFieldSelector(FieldSelector):
    """Keeps the rows of the topk most frequent values of the field (reverse=True; the least
    frequent with reverse=False), or of int(top_ratio * distinct values), the smaller when both
    are set. Equally frequent values rank in order of first appearance."""

    top_ratio: Ratio = None
    topk: Optional[PositiveInt] = None
    reverse: bool = True

    def chosen(self, values: list[Any]) -> Optional[list[int]]:
        groups: dict[Any, list[int]] = {}
        for i, v in enumerate(self.scalars(values)):
            groups.setdefault(v, []).append(i)
        n = select_count(self.top_ratio, self.topk, len(groups))
        if n is None:
            return None
        return list(chain.from_iterable(sorted(groups.values(), key=len, reverse=self.reverse)[: int(n)]))


@register("tags_specified_field_selector")
class TagsSpecifiedFieldSelector(FieldSelector):
    """Keeps the rows whose field value equals one of target_tags (case-sensitive; a number
    never equals a tag, which is a string). target_tags is required, as in DataJuicer."""

    target_tags: Optional[list[str]] = None

    @model_validator(mode="after")
    def _has_tags(self):
        if self.target_tags is None:
            raise ValueError("target_tags is required: the list of values whose rows are kept")
        return self

    def chosen(self, values: list[Any]) -> Optional[list[int]]:
        tags = set(self.target_tags or ())
        return [i for i, v in enumerate(self.scalars(values)) if v in tags]
