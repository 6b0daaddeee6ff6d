# The two commands a new user needs: `make demo` and `make test`. Each sets itself up.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(PYTHON) -m uv
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint setup clean

# uv installs exactly what uv.lock pins; it is itself pinned and installed with pip.
$(BIN)/.synced: pyproject.toml uv.lock
	@$(PYTHON) -m uv --version 2>/dev/null | grep -q " $(UV_VERSION)" || \
		$(PYTHON) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(UV) sync --frozen --quiet
	@touch $@

setup: $(BIN)/.synced

demo: setup
	$(BIN)/balancer demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
