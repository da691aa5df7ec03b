"""Imports every op family so that their @register decorators run.

`DJ_EXTRA_OP_MODULES` (comma-separated module names) adds user or test op modules;
it is read here so that pool workers, Ray workers and the driver all see the same ops."""
import importlib
import os
import pkgutil

from . import __path__ as _ops_path

for _mod in pkgutil.iter_modules(_ops_path):
    if not _mod.name.startswith("_") and _mod.name not in {"base", "dj_adapter", "registry", "catalog"}:
        importlib.import_module(f"{__package__}.{_mod.name}")

for _name in filter(None, (m.strip() for m in os.environ.get("DJ_EXTRA_OP_MODULES", "").split(","))):
    importlib.import_module(_name)
