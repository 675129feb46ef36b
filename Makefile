# The two commands of the README: `make book` and `make test`. Both create/reuse .venv and install what
# is missing (scripts/setup_env.sh), so they work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONHASHSEED := 0

.PHONY: env book test test-fast browser-test strip check-notebooks bench clean

env:
	@bash scripts/setup_env.sh

## Executed HTML book in _build/html at $QSTAR_SCALE (unset: gpu if CUDA else cpu). Strict: any execution
## error or Sphinx warning fails the build.
book: env
	@bash scripts/web_assets.sh
	$(VENV)/bin/jupyter-book build . --builder html --warningiserror --nitpick --keep-going

## Every test: notebook hygiene, pytest over tests/, nbval over every notebook, all at ci scale.
test: env check-notebooks
	QSTAR_SCALE=ci $(PY) -m pytest tests notebooks --ignore=tests/browser --nbval-lax -p no:cacheprovider

## The built book (_build/html, from `make book`) in headless Chromium: pages, maths, images, links.
browser-test: env
	@bash scripts/install_chromium.sh
	$(PY) -m pytest tests/browser -p no:cacheprovider

test-fast: env
	QSTAR_SCALE=ci $(PY) -m pytest tests --ignore=tests/browser -x -q -p no:cacheprovider -m "not slow"

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
