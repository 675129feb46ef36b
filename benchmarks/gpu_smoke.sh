#!/usr/bin/env bash
# One command, < 8 minutes on one GPU, offline: PASS/FAIL/SKIP per check (see benchmarks/gpu_smoke.py).
# Needs only torch, transformers and accelerate (random weights, the built-in tiny tokenizer). Without CUDA it
# runs the tiny-shape CPU dry run. Extra arguments go to the driver (e.g. --cpu-dry-run).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PYTHON="${PYTHON:-python}"
exec timeout 480 "$PYTHON" benchmarks/gpu_smoke.py "$@"
