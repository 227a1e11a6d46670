#!/usr/bin/env bash
# The GPU path, prepared to run in one go on a machine with a CUDA GPU:
# install onnxruntime-gpu, check the CUDA provider really loads, run the GPU tests (images and
# the GPT decode loop), then the same benchmarks as `make bench` with the CUDA execution
# provider and IO binding. It installs from PyPI: a machine that cannot reach it needs the
# wheels carried in (Python and onnxruntime-gpu matching that machine).
#   bench/gpu.sh            (from the repository root; needs python3 and redis-server)
set -euo pipefail
cd "$(dirname "$0")/.."
make install RUNTIME=gpu
BIN=.venv/bin
"$BIN/python" -m pip uninstall -y -q onnxruntime 2>/dev/null || true   # the CPU build shadows the GPU one
"$BIN/python" -m pip install -q --force-reinstall --no-deps "onnxruntime-gpu>=1.18"
"$BIN/python" - <<'PY'
import onnxruntime as ort
print("onnxruntime", ort.__version__, "providers:", ort.get_available_providers())
assert "CUDAExecutionProvider" in ort.get_available_providers(), "CUDA provider not available"
PY
[ -n "$(ls -d model_repository/vae/*/manifest.json 2>/dev/null)" ] || "$BIN/genserve" export vae
[ -n "$(ls -d model_repository/gpt/*/manifest.json 2>/dev/null)" ] || "$BIN/genserve" export gpt
scripts/test.sh -m gpu -q -p no:warnings   # image sessions and the GPT's decode loop on CUDA vs the CPU
"$BIN/python" -m bench --provider cuda --threads 1 --out bench_results/gpu "$@"
"$BIN/python" -m bench.text --provider cuda --runs 3
