# Two commands on a fresh machine:
#   make repro   set up .venv (if missing or out of date) and run the pipeline (dvc repro)
#   make test    set up .venv and run the linters and the whole test suite (make test-fast: not slow)
VENV ?= .venv
STAMP := $(VENV)/.installed
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: setup repro test test-fast browser lint format lock clean-venv ui docs docs-serve

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

test: setup lint docs browser
	python -m pytest

# The docs site (docs/, mkdocs.yml) into site/; strict: a broken link or a page left out of the nav
# fails. The parameters page is generated from src/config/ (docs/hooks/parameters.py).
docs: setup
	python -m mkdocs build --strict --quiet

docs-serve: setup
	python -m mkdocs serve

# The inner loop: every test not marked slow (no DVC, Ray or whole trainings).
test-fast: setup lint
	python -m pytest -m "not slow"

# The MLflow UI test opens the UI in a real headless browser. On CI (root on Debian) it is installed
# here, in about 20 s; elsewhere that test is skipped with a line saying how to get it.
browser:
	@if [ -n "$$CI" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& ! command -v chromium-headless-shell >/dev/null && ! command -v chromium >/dev/null; then \
		echo "installing chromium-headless-shell for the MLflow UI test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null) \
		|| echo "could not install chromium-headless-shell: the browser test will be skipped"; fi

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

# The MLflow UI on the project's store, bound to 127.0.0.1 only; it prints the address of the
# project's experiment in the training view.
UI_PORT ?= 5000
UI_PARAMS ?= params.yaml
ui: setup
	python -m scripts.mlflow_ui --port $(UI_PORT) --params $(UI_PARAMS)
