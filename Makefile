# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast install install-dev clean reference

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

PLOTLY_BUNDLE := src/seglab/reporting/assets/plotly-basic.min.js

# plotly's basic partial bundle for the reports, from the npm registry (checked by SHA-256)
$(PLOTLY_BUNDLE): scripts/fetch_plotly_bundle.py | $(BIN)/python
	$(BIN)/python scripts/fetch_plotly_bundle.py

$(VENV)/.installed: pyproject.toml | $(BIN)/python $(PLOTLY_BUNDLE)
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python $(PLOTLY_BUNDLE)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/seglab demo --overwrite  # replaces runs/demo of an earlier demo, nothing else

test: install-dev
	$(BIN)/ruff check src tests benchmarks scripts  # pyflakes + pycodestyle, pyproject.toml [tool.ruff]
	$(BIN)/python -m pytest -q --durations=15

# docs/config-reference.md and docs/cli-reference.md from the schema and the parser (tests/test_reference.py
# fails when they are stale)
reference: install
	$(BIN)/python -m seglab.reference docs

# for the edit-test loop: leaves out the slow and the real-data checks (CI runs `make test`)
test-fast: install-dev
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest -q -m "not slow and not realdata"

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
