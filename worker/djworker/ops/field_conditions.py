"""Filters on other sample fields: a numeric field's range, and a condition over fields.

Both work sample by sample in DataJuicer and keep no cross-row state, so a whole table
gives the same per-row answers."""
from __future__ import annotations

import ast
import functools
import operator
import sys
from typing import Any, Callable, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import field_validator

from .base import Filter, register
from .field_filters import SpecifiedFieldFilter
from .text_utils import stat_column


def is_number(value: Any) -> bool:
    """DJ's test: a falsy value (0, 0.0, '', None, False) is *not* a number, and a value
    float() refuses with ValueError is not either; one it refuses with TypeError (a
    list, a struct) raises, as in DJ."""
    if not value:
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


@register("specified_numeric_field_filter")
class SpecifiedNumericFieldFilter(Filter):
    """Keeps rows whose `field_key` value (dotted path through struct fields) is a number
    in [min_value, max_value]. Strings that float() accepts count ('1e3', ' 7', 'nan',
    'inf'); zero, empty and non-numeric values are dropped, even with reversed_range. The
    stat key is field_key itself, holding the raw value. An empty field_key raises, as
    DJ's assertion does, on every row."""

    field_key: str = ""
    min_value: float = -sys.maxsize
    max_value: float = sys.maxsize

    def compute_stats(self, table: pa.Table) -> dict[str, pa.Array]:
        if stat_column(table, self.field_key) is not None:
            return {}
        return {self.field_key: SpecifiedFieldFilter.field_values(self, table)}

    def keep(self, table: pa.Table, stats: dict[str, pa.Array]) -> pa.Array:
        if not self.field_key:
            return pa.array([True] * table.num_rows, pa.bool_())
        values = stat_column(table, self.field_key).to_pylist()
        numbers = pa.array([float(v) if is_number(v) else None for v in values], pa.float64())
        return pc.fill_null(self.in_range(numbers, float(self.min_value), float(self.max_value)), False)


CONDITION_STAT = "general_field_filter_condition"

_COMPARISONS: dict[type, Callable[[Any, Any], bool]] = {
    ast.Gt: operator.gt, ast.Lt: operator.lt, ast.Eq: operator.eq, ast.NotEq: operator.ne,
    ast.GtE: operator.ge, ast.LtE: operator.le,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}  # fmt: skip


class Condition:
    """Evaluates DJ's condition language over one sample dict.

    Allowed: `and`/`or` (short-circuit), chained comparisons (< <= > >= == != in, not in),
    unary - + not, names (a field), attributes (a key of a dict field, e.g. meta.lang or
    __dj__stats__.text_len), constants, and list/tuple/set displays. A comparison with a
    missing (None) side is False, except `not in`, which is True."""

    def __init__(self, sample: dict[str, Any]):
        self.sample = sample

    def value(self, node: ast.AST) -> Any:
        if isinstance(node, ast.BoolOp):
            values = (self.value(v) for v in node.values)
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.UnaryOp):
            operand = self.value(node.operand)
            if isinstance(node.op, ast.USub):
                return -operand
            if isinstance(node.op, ast.UAdd):
                return +operand
            if isinstance(node.op, ast.Not):
                return not operand
            raise ValueError(f"unsupported unary operator: {type(node.op).__name__}")
        if isinstance(node, ast.Name):
            return self.sample.get(node.id)
        if isinstance(node, ast.Attribute):
            parent = self.value(node.value)
            if isinstance(parent, dict):
                return parent.get(node.attr)
            return getattr(parent, node.attr, None)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List):
            return [self.value(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(self.value(e) for e in node.elts)
        if isinstance(node, ast.Set):
            return {self.value(e) for e in node.elts}
        raise ValueError(f"unsupported expression {type(node).__name__}: {ast.unparse(node)!r}")

    def compare(self, node: ast.Compare) -> bool:
        left = self.value(node.left)
        rights = [self.value(c) for c in node.comparators]  # all evaluated before any comparison, as in DJ
        for op, right in zip(node.ops, rights):
            if left is None or right is None:
                return isinstance(op, ast.NotIn)
            if type(op) not in _COMPARISONS:
                raise ValueError(f"unsupported comparison operator: {type(op).__name__}")
            if not _COMPARISONS[type(op)](left, right):
                return False
            left = right
        return True


@functools.cache
def parsed_condition(condition: str) -> ast.Expression:
    try:
        return ast.parse(condition, mode="eval")
    except SyntaxError as err:
        raise ValueError(f"invalid filter condition {condition!r}: {err.msg}") from None


@register("general_field_filter")
class GeneralFieldFilter(Filter):
    """Keeps rows for which `filter_condition` holds, e.g.
    "10 < num <= 30 and text != 'nothing here' and __dj__meta__.a == 3".

    The result goes to the stat `general_field_filter_condition` (a present one is not
    recomputed); the row is kept when it is truthy. An empty condition keeps every row and
    records nothing. A condition that is not valid Python is refused with the recipe."""

    filter_condition: str = ""

    stat_key: ClassVar[str] = CONDITION_STAT

    @field_validator("filter_condition")
    @classmethod
    def _parses(cls, value: str) -> str:
        if value:
            parsed_condition(value)
        return value

    def compute_stats(self, table: pa.Table) -> dict[str, pa.Array]:
        if not self.filter_condition.strip() or stat_column(table, CONDITION_STAT) is not None:
            return {}
        body = parsed_condition(self.filter_condition).body
        return {CONDITION_STAT: pa.array([Condition(row).value(body) for row in table.to_pylist()])}

    def keep(self, table: pa.Table, stats: dict[str, pa.Array]) -> pa.Array:
        results = stat_column(table, CONDITION_STAT)
        if results is None:
            return pa.array([True] * table.num_rows, pa.bool_())
        return pa.array([bool(r) for r in results.to_pylist()], pa.bool_())

