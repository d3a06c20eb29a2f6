# Two commands on a fresh machine:
#   make repro   set up .venv (if missing or out of date) and run the pipeline (dvc repro)
#   make test    set up .venv and run the linters and the whole test suite (make test-fast: not slow)
VENV ?= .venv
STAMP := $(VENV)/.installed
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup repro test test-fast lint format lock clean-venv ui

setup: $(STAMP)

# Reinstall whenever pyproject.toml or the lock file changes. The lock pins every
# package, so an install next month resolves the same stack.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade "pip>=24,<27"
	$(VENV)/bin/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	@touch $(STAMP)

repro: setup
	dvc repro

test: setup lint
	python -m pytest

# The inner loop: every test not marked slow (no DVC, Ray or whole trainings).
test-fast: setup lint
	python -m pytest -m "not slow"

lint: setup
	ruff check .
	ruff format --check .

format: setup
	ruff check --fix .
	ruff format .

# Re-resolve the dependencies of pyproject.toml in a scratch environment and pin them.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade "pip>=24,<27"
	.lock-venv/bin/python -m pip install --quiet ".[dev]"
	.lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^lmpipe' \
		| sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/' > requirements.lock
	rm -rf .lock-venv

clean-venv:
	rm -rf $(VENV)

# The MLflow UI on the project's store, bound to 127.0.0.1 only.
UI_PORT ?= 5000
ui: setup
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true \
	mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db" --host 127.0.0.1 --port $(UI_PORT) --workers 1
