#!/usr/bin/env bash
# Build the default model zoo into the repository; models that already exist are kept.
# `scripts/models.sh digits gan` builds only the models named; CHECKPOINTS moves the training
# checkpoints (default checkpoints/; a finished checkpoint is reused, not retrained).
set -euo pipefail
cd "$(dirname "$0")/.."
# The checkout's .venv, or the `genserve` on PATH (the compose `models` builder's image).
GENSERVE=.venv/bin/genserve
[ -x "$GENSERVE" ] || GENSERVE=genserve
REPO=${GENSERVE_MODEL_REPOSITORY:-model_repository}
CHECKPOINTS=${CHECKPOINTS:-checkpoints}
# name, then what `genserve export` builds it from; digits comes first: it judges the
# generators' samples (FD, Inception score) when they are exported.
MODELS=(
  "digits digits"
  "vae vae"
  "cvae vae --conditional"
  "dae dae"
  "gan gan"
  "cgan gan --conditional"
  "faces faces"
  "gpt gpt"
  "textclf textclf"
)
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
