# The two commands a new user needs: `make run` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: help run test stop lint venv stack migrate demo serve format destroy tools bench-metrics

help:
	@echo "make run    - set everything up (venv, local stack, migrations, demo data) and serve on :$(PORT)"
	@echo "make test   - set everything up and run the whole test suite against the real stack"
	@echo "make stop   - stop the local stack (data is kept; 'make destroy' removes it)"
	@echo "make lint   - ruff check, ruff format --check, makemigrations --check"
	@echo "make bench-metrics - requests/s of a bare endpoint with and without the metrics middleware"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@echo "==> creating virtualenv in $(VENV) and installing requirements"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "Cannot create a virtualenv: install python3-venv (Debian: apt-get install python3-venv)"; exit 1; }
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.installed

stack:
	@bin/stack up

migrate: venv stack
	@$(PY) manage.py migrate --noinput

demo: migrate
	@$(PY) manage.py bootstrap_demo --base-url http://127.0.0.1:$(PORT)

serve: venv
	@$(PY) manage.py collectstatic --noinput -v0
	@echo "==> serving on http://127.0.0.1:$(PORT) (Ctrl-C to stop; 'make stop' stops the stack)"
	@PORT=$(PORT) $(VENV)/bin/gunicorn -c config/gunicorn.py config.wsgi

run: demo serve

# Command-line tools the tests need (promtool checks deploy/prometheus).
tools:
	@bin/ensure-tools promtool

test: venv stack tools
	@$(VENV)/bin/pytest $(PYTEST_ARGS)

# --- observability benchmark (docs/benchmarks.md "Metrics overhead") ---
bench-metrics: venv stack
	@bin/ensure-tools wrk
	@$(PY) bench/metrics_overhead.py

lint: venv
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(PY) manage.py makemigrations --check --dry-run

stop:
	@bin/stack down

destroy:
	@bin/stack destroy
