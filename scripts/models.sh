#!/usr/bin/env bash
# Build the default model zoo into the repository; models that already exist are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
REPO=${GENSERVE_MODEL_REPOSITORY:-model_repository}
for family in vae; do
  if [ -n "$(ls -d "$REPO/$family"/*/manifest.json 2>/dev/null)" ]; then
    echo "== $family: already in $REPO"
  else
    echo "== building $family"
    "$BIN/genserve" export "$family" --repository "$REPO"
  fi
done
