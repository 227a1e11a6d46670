#!/usr/bin/env bash
# Build the default model zoo into the repository; models that already exist are kept.
# `scripts/models.sh digits gan` builds only the models named; CHECKPOINTS moves the training
# checkpoints (default checkpoints/; a finished checkpoint is reused, not retrained).
set -euo pipefail
cd "$(dirname "$0")/.."
# The checkout's .venv, or the `genserve` on PATH (the compose `models` builder's image).
GENSERVE=.venv/bin/genserve PYTHON=.venv/bin/python
[ -x "$GENSERVE" ] || { GENSERVE=genserve; PYTHON=python3; }
REPO=${GENSERVE_MODEL_REPOSITORY:-model_repository}
CHECKPOINTS=${CHECKPOINTS:-checkpoints}
# name, then what `genserve export` builds it from, in build order: the registry's zoo
# (export/registry.py), which puts digits first: it judges the generators' samples.
mapfile -t MODELS < <("$PYTHON" -m genserve.export.registry)
[ ${#MODELS[@]} -gt 0 ] || { echo "no zoo from genserve.export.registry" >&2; exit 1; }
for entry in "${MODELS[@]}"; do
  read -r name args <<< "$entry"
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then
    continue
  fi
  if [ -n "$(ls -d "$REPO/$name"/*/manifest.json 2>/dev/null)" ]; then
    echo "== $name: already in $REPO"
  else
    echo "== building $name"
    # shellcheck disable=SC2086  # $args is a family and its flags, split on purpose
    "$GENSERVE" export $args --name "$name" --repository "$REPO" --checkpoints "$CHECKPOINTS"
  fi
done
