#!/usr/bin/env bash
# Set up, then run the embedded demo: the standard cleaning recipe over the bundled
# demo corpus, locally, with every_op checkpoints. Extra args go to dj-process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dj-process --config configs/demo/process.yaml "$@"
