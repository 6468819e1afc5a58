# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install install-dev clean

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
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
