"""Mappers that run the recipe author's own Python: a lambda, or a function in a file.

They run arbitrary code with the engine's rights, exactly as DataJuicer does; a recipe
using them must come from someone you trust. The code must be deterministic (checkpoints
and retries replay it on the same rows) and must not depend on the batch it sees.

The function gets a sample as a dict (`batched: false`) or a batch as a dict of lists
(`batched: true`) and returns a dict. As in DataJuicer's executor, the returned keys
replace or add fields and fields it leaves out are kept. A batched function may return
a different number of rows if it returns every field."""
from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import os
import types
from typing import Any, Callable

import pyarrow as pa
from pydantic import PrivateAttr, field_validator, model_validator

from .base import Mapper, register

SampleFunction = Callable[[dict[str, Any]], Any]


@functools.cache
def compile_lambda(source: str) -> SampleFunction:
    """The one-argument lambda written in `source` (a Python expression)."""
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as err:
        raise ValueError(f"invalid lambda function: {err}") from None
    if not isinstance(tree.body, ast.Lambda):
        raise ValueError("must be the text of a lambda, e.g. \"lambda sample: {**sample, 'n': len(sample['text'])}\"")
    if len(tree.body.args.args) != 1:
        raise ValueError(f"the lambda must take exactly one argument, not {len(tree.body.args.args)}")
    return eval(compile(tree, "<lambda_str>", "eval"), {"__builtins__": __builtins__})  # noqa: S307  (DJ does the same)


@functools.cache
def load_function(source: str, path: str, function_name: str) -> SampleFunction:
    """Run the file's source as a module named after the file and return its one-argument function."""
    module = types.ModuleType(os.path.splitext(os.path.basename(path))[0])
    module.__file__ = path
    exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102  (running the user's file is the point)
    func = getattr(module, function_name, None)
    if func is None:
        raise ValueError(f"function {function_name!r} not found in {path!r}")
    if not callable(func):
        raise ValueError(f"{function_name!r} in {path!r} is not callable")
    params = inspect.getfullargspec(func).args
    if len(params) != 1:
        raise ValueError(f"function {function_name!r} in {path!r} must take exactly one argument, not {len(params)}")
    return func


def _column(values: list[Any], like: pa.DataType | None) -> pa.Array:
    """Values as an Arrow column, in the input column's type when they still fit it."""
    if like is not None:
        try:
            return pa.array(values, like)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            pass
    return pa.array(values)


def _table(columns: dict[str, list[Any]], like: pa.Schema) -> pa.Table:
    return pa.table({name: _column(values, like.field(name).type if name in like.names else None)
                     for name, values in columns.items()})


class PythonMapper(Mapper):
    """Applies `function()` per sample or per batch and merges what it returns."""

    batched: bool = False

    def function(self) -> SampleFunction | None:
        raise NotImplementedError

    def checked(self, result: Any) -> dict[str, Any]:
        if not isinstance(result, dict):
            raise ValueError(f"{self.op_name}: the function must return a dict, got {type(result).__name__} instead")
        return result

    def process(self, table: pa.Table) -> pa.Table:
        func = self.function()
        if func is None:
            return table  # DJ's identity function when no code is given
        if self.batched:
            return self.process_batch(func, table)
        rows = [{**row, **self.checked(func(dict(row)))} for row in table.to_pylist()]
        names = list(table.column_names) + [k for row in rows for k in row if k not in table.column_names]
        names = list(dict.fromkeys(names))
        return _table({name: [row.get(name) for row in rows] for name in names}, table.schema)

    def process_batch(self, func: SampleFunction, table: pa.Table) -> pa.Table:
        result = self.checked(func(table.to_pydict()))
        lengths = {name: len(values) for name, values in result.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{self.op_name}: the returned fields have different lengths: {lengths}")
        rows = next(iter(lengths.values()), table.num_rows)
        kept = [name for name in table.column_names if name not in result]
        if rows != table.num_rows and kept:
            raise ValueError(
                f"{self.op_name}: the function returned {rows} rows for {table.num_rows} but left out the fields "
                f"{kept}; a function that changes the row count must return every field"
            )
        columns = {name: (result[name] if name in result else table.column(name).to_pylist())
                   for name in table.column_names}
        columns.update({name: values for name, values in result.items() if name not in columns})
        return _table(columns, table.schema)


@register("python_lambda_mapper")
class PythonLambdaMapper(PythonMapper):
    """Runs `lambda_str`, the text of a one-argument lambda (empty: samples pass unchanged)."""

    lambda_str: str = ""

    @field_validator("lambda_str")
    @classmethod
    def _compiles(cls, value: str) -> str:
        if value:
            compile_lambda(value)
        return value

    def function(self) -> SampleFunction | None:
        return compile_lambda(self.lambda_str) if self.lambda_str else None

    def warm_up(self) -> None:
        self.function()


@register("python_file_mapper")
class PythonFileMapper(PythonMapper):
    """Runs `function_name` from the Python file `file_path` (empty: samples pass unchanged).

    The file is read when the recipe is built (a relative path is resolved against the
    current directory) and its source travels with the op, so workers need no copy of it;
    its hash is part of the op's parameters, so editing the file invalidates checkpoints."""

    file_path: str = ""
    function_name: str = "process_single"

    _source: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _load(self):
        if not self.file_path:
            return self
        path = os.path.abspath(os.path.expanduser(self.file_path))
        if not os.path.isfile(path):
            raise ValueError(f"file_path: {path!r} does not exist")
        if not path.endswith(".py"):
            raise ValueError(f"file_path: {path!r} is not a Python file (.py)")
        with open(path, encoding="utf-8") as f:
            self._source = f.read()
        load_function(self._source, path, self.function_name)
        return self

    def params(self) -> dict[str, Any]:
        return {**super().params(), "source_sha256": hashlib.sha256(self._source.encode()).hexdigest()}

    def function(self) -> SampleFunction | None:
        if not self.file_path:
            return None
        return load_function(self._source, os.path.abspath(os.path.expanduser(self.file_path)), self.function_name)

    def warm_up(self) -> None:
        self.function()
