#!/usr/bin/env bash
# Build the default model zoo into the repository; models that already exist are kept.
# `scripts/models.sh digits gan` builds only the models named; CHECKPOINTS moves the training
# checkpoints (default checkpoints/; a finished checkpoint is reused, not retrained; each
# build's log is checkpoints/logs/<name>.log); MODEL_JOBS sets how many builds run at once
# (default: one per core, at most 8). The order and the parallel runs: export/zoo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
# The checkout's .venv, or the `genserve` on PATH (the compose `models` builder's image).
GENSERVE=.venv/bin/genserve PYTHON=.venv/bin/python
[ -x "$GENSERVE" ] || { GENSERVE=genserve; PYTHON=python3; }
export GENSERVE
exec "$PYTHON" -m genserve.export.zoo --repository "${GENSERVE_MODEL_REPOSITORY:-model_repository}" "$@"
