"""`custom_operator_paths`: import the user's op modules so the ops they register exist.

As in DataJuicer, a path is a Python file, a package directory (with `__init__.py`, imported
as a package) or a directory of Python files (each imported). A module registers native ops
with `djworker.ops.base.register`, or DataJuicer ops with DataJuicer's `OPERATORS` registry
(those run through the adapter when py-data-juicer is installed).

Local workers are forked after the recipe loads, so they inherit the modules. Ray workers
receive ops pickled by value: the modules are registered with cloudpickle for that."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from types import ModuleType

from .errors import RecipeError


def _module_name(path: str) -> str:
    """A stable module name per file: the same path loads once, however often recipes load."""
    stem = os.path.splitext(os.path.basename(path.rstrip(os.sep)))[0]
    return f"djworker_custom_{stem}_{hashlib.sha256(path.encode()).hexdigest()[:8]}"


def _import_file(path: str, name: str | None = None, package_dir: str | None = None) -> ModuleType:
    name = name or _module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    locations = [package_dir] if package_dir else None
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=locations)
    if spec is None or spec.loader is None:
        raise RecipeError(f"custom_operator_paths: cannot import {path!r}; give a .py file or a directory of them")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: a module may import itself or its siblings
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise RecipeError(f"custom_operator_paths: importing {path!r} failed: {type(err).__name__}: {err}; "
                          "fix the module and rerun") from None
    _pickle_by_value(module)
    return module


def _pickle_by_value(module: ModuleType) -> None:
    try:
        import cloudpickle
    except ImportError:  # no Ray: ops never leave this process tree
        return
    cloudpickle.register_pickle_by_value(module)


def load_custom_operators(paths: list[str]) -> list[ModuleType]:
    """Import every path (in order); a missing path is a RecipeError naming it."""
    modules = []
    for raw in paths:
        path = os.path.abspath(os.path.expanduser(raw))
        if os.path.isfile(path):
            if not path.endswith(".py"):
                raise RecipeError(f"custom_operator_paths: {raw!r} is not a Python file (.py)")
            modules.append(_import_file(path))
        elif os.path.isdir(path):
            init = os.path.join(path, "__init__.py")
            if os.path.isfile(init):
                modules.append(_import_file(init, _module_name(path), package_dir=path))
            else:
                for name in sorted(os.listdir(path)):
                    if name.endswith(".py"):
                        modules.append(_import_file(os.path.join(path, name)))
        else:
            raise RecipeError(f"custom_operator_paths: {raw!r} does not exist; give a .py file or a directory")
    return modules
