# The two commands of the README: `make book` and `make test`. Both create/reuse .venv and install what
# is missing from requirements.lock (scripts/setup_env.sh), so they work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONHASHSEED := 0

.PHONY: env book test test-fast browser-test lint strip check-notebooks check-lock lock lab bench clean

## Installs from requirements.lock when a requirement file changed. Asked for by name (`make env`), it also
## puts a .venv that drifted from the lock back on it; as a prerequisite of test it does not, so that
## `make test` reports the drift (check-lock) instead of silently undoing it.
env:
	@bash scripts/setup_env.sh $(if $(filter env,$(MAKECMDGOALS)),--repair)

## Executed HTML book in _build/html at $QSTAR_SCALE (unset: gpu if CUDA else cpu). Strict: any execution
## error or Sphinx warning fails the build. Executed notebooks are cached per library digest and scale
## (scripts/book_cache.py): a rebuild after a prose edit executes nothing; FRESH=1 executes everything again.
book: env
	@bash scripts/web_assets.sh
	@$(PY) scripts/book_cache.py $(if $(FRESH),--fresh)
	$(VENV)/bin/jupyter-book build . --builder html --warningiserror --nitpick --keep-going

## Every test: lint, notebook hygiene, pytest over tests/, nbval over every notebook, all at ci scale.
test: env check-lock lint check-notebooks
	QSTAR_SCALE=ci $(PY) -m pytest tests notebooks --ignore=tests/browser --nbval-lax -p no:cacheprovider

## The built book (_build/html, from `make book`) in headless Chromium: pages, maths, images, links.
browser-test: env
	@bash scripts/install_chromium.sh
	$(PY) -m pytest tests/browser -p no:cacheprovider

test-fast: env
	QSTAR_SCALE=ci $(PY) -m pytest tests --ignore=tests/browser -x -q -p no:cacheprovider -m "not slow"

## The installed versions are the locked ones (scripts/check_lock.py); on drift it says what differs and how to fix.
check-lock: env
	@$(PY) scripts/check_lock.py

## Regenerate requirements.lock from requirements-lock.in (requirements-dev.txt + torch==2.13.0) with
## pip-tools, in its own venv so the tool's dependencies stay out of .venv. Pins already in the lock are
## kept unless they conflict; `make lock LOCK_FLAGS=--upgrade` moves every pin to the newest release.
## pip resolves torch to the local CPU wheel (2.13.0+cpu, no nvidia-*/triton dependencies); the lock
## states it as torch==2.13.0, which that wheel and PyPI's both satisfy.
LOCK_TOOLS := $(VENV)/lock-tools
PIP_TOOLS ?= pip-tools==7.6.2
PYTHON ?= python3
lock:
	@test -x $(LOCK_TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install -q "$(PIP_TOOLS)"; }
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile --quiet --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links $(LOCK_FLAGS) -o requirements.lock requirements-lock.in
	@sed -i -E 's/^(torch==[0-9][0-9.]*)\+[A-Za-z0-9.]+$$/\1/' requirements.lock
	@if grep -nE '^(nvidia-|triton|cuda-)' requirements.lock; then \
	  echo "[lock] ERROR: CUDA packages in requirements.lock (torch resolved from PyPI, not the CPU wheel)" >&2; exit 1; fi
	@echo "[lock] requirements.lock: $$(grep -cE '^[A-Za-z0-9]' requirements.lock) packages pinned"

## JupyterLab (locked) on notebooks/ at $QSTAR_SCALE (unset: gpu if CUDA else cpu): `QSTAR_SCALE=ci make lab`.
## LAB_ARGS go to `jupyter lab`, e.g. LAB_ARGS="--no-browser --port 8889".
lab: env
	@scale=$$($(PY) -c "from qstar_lib.scale import active_scale; print(active_scale())") && \
	  echo "[lab] QSTAR_SCALE=$$scale: JupyterLab on notebooks/ (Ctrl-C stops it)" && \
	  QSTAR_SCALE=$$scale $(VENV)/bin/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_ARGS)

## ruff over the code and the notebooks' code cells: lint (`ruff check`) and formatting (`ruff format --check`).
## Settings: [tool.ruff] in pyproject.toml, and notebooks/ruff.toml (the narrower lines of the book's code column).
## `ruff check --fix` and `ruff format` on the same paths repair most of what it reports.
LINT_PATHS := qstar_lib tests benchmarks scripts notebooks
lint: env
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

check-notebooks: env
	@$(PY) scripts/check_notebooks.py
	@$(PY) scripts/notebook_cells.py --check

strip: env
	@$(PY) scripts/check_notebooks.py --strip
	@$(PY) scripts/notebook_cells.py

bench: env
	$(PY) benchmarks/bench_dpo.py --model smollm2-135m

clean:
	rm -rf _build
