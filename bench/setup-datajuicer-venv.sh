#!/usr/bin/env bash
# A venv of its own for DataJuicer 1.6.1, used only by `bench/run.py --with-datajuicer`
# to run DataJuicer's `default` and `ray_partitioned` executors beside this engine.
# It never shares packages with the project's venv, so DataJuicer's pins (datasets,
# fsspec, dill, ...) can never conflict with requirements-lock.txt.
#
#   bench/setup-datajuicer-venv.sh            # create or complete it (idempotent)
#   DJ_BENCH_VENV=/elsewhere bench/setup-datajuicer-venv.sh
#
# Prints the venv's python on its last line.
set -euo pipefail

VENV="${DJ_BENCH_VENV:-$HOME/.cache/datajuicer-ft/dj-bench-venv}"
PYTHON="${PYTHON:-python3.11}"
# DataJuicer itself, the one optional dependency of the benchmarked ops (fix_unicode_mapper
# needs ftfy; the same 6.3.1 as this project), and Ray for `ray_partitioned` (the same
# 2.60.0 this project pins; `default` adds the dashboard/agent pieces DJ's extra asks for).
PACKAGES=("py-data-juicer==1.6.1" "ftfy==6.3.1" "ray[default,data]==2.60.0")

if ! command -v "$PYTHON" >/dev/null; then
  echo "error: $PYTHON not found; set PYTHON=/path/to/python3.11 (DataJuicer 1.6.1 needs Python >= 3.10)" >&2
  exit 2
fi
mkdir -p "$(dirname "$VENV")"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.dj-bench-packages"
if [ "$(cat "$stamp" 2>/dev/null)" != "${PACKAGES[*]}" ]; then
  "$VENV/bin/python" -m pip install -qq --upgrade pip
  "$VENV/bin/python" -m pip install -qq "${PACKAGES[@]}"
  "$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("py-data-juicer", "ftfy", "ray"):
    print(name, md.version(name))
import data_juicer.core.executor.ray_executor_partitioned  # noqa: F401  (fails here, not mid-benchmark)
PY
  echo "${PACKAGES[*]}" > "$stamp"
fi
echo "$VENV/bin/python"
