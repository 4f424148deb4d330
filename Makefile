# The two commands a new user needs: `make run` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The one public origin (the edge: REST, admin, websockets), from the environment or
# what `bin/stack up` saved; gunicorn and uvicorn listen on internal ports behind it.
ORIGIN := $(shell bin/stack origin)
PYTEST_ARGS ?=

.PHONY: help run test stop lint venv stack migrate demo serve format destroy tools loadtest client-deps

help:
	@echo "make run    - set everything up (venv, local stack, migrations, demo data) and serve on $(ORIGIN)"
	@echo "make test   - set everything up and run the whole test suite against the real stack"
	@echo "make stop   - stop the local stack (data is kept; 'make destroy' removes it)"
	@echo "make lint   - ruff check, ruff format --check, makemigrations --check"
	@echo "make loadtest - 100 000 orgs, Locust through the edge with a fault drill, report in reports/"
	@echo "benchmarks (docs/benchmarks.md): make bench-serving | bench-idempotency | bench-replicas |"
	@echo "    bench-realtime | bench-edge | bench-metrics | bench-changelog | bench-access | bench-push | bench-sync |"
	@echo "    bench-summary"

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
	@$(PY) manage.py migrate_clusters

demo: migrate
	@$(PY) manage.py bootstrap_demo --base-url $(ORIGIN)

serve: venv stack
	@$(PY) manage.py collectstatic --noinput -v0
	@echo "==> serving on $(ORIGIN): REST, admin and websockets (Ctrl-C to stop; 'make stop' stops the stack)"
	@bin/serve

run: demo serve

# Command-line tools the tests need (promtool checks deploy/prometheus).
tools:
	@bin/ensure-tools promtool

# The generated TypeScript client's tools (tests/test_typescript_client.py), pinned in
# client/package-lock.json; needs node and npm (Debian: apt-get install nodejs npm).
client/node_modules/.installed: client/package.json client/package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js and npm (Debian: apt-get install nodejs npm)"; exit 1; }
	@npm ci --prefix client --no-audit --no-fund --loglevel=error
	@touch $@

client-deps: client/node_modules/.installed

test: venv stack tools client-deps
	@$(VENV)/bin/pytest $(PYTEST_ARGS)

# Metrics overhead: a bare endpoint with and without the metrics middleware.
bench-metrics: migrate bench-tools
	@$(PY) bench/metrics_overhead.py

lint: venv
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@SECRET_KEY=$${SECRET_KEY:-lint-only-not-a-secret} $(PY) manage.py makemigrations --check --dry-run

stop:
	@bin/stack down

destroy:
	@bin/stack destroy

# --- benchmarks (not tests: they print ratios and percentiles; see docs/benchmarks.md) ---
.PHONY: bench-tools bench-serving bench-idempotency bench-changelog bench-edge bench-replicas bench-realtime bench-metrics bench-access bench-push bench-sync bench-summary bench-org-move
bench-tools:
	@bin/ensure-tools wrk

bench-serving: migrate bench-tools
	@$(PY) bench/serving.py

bench-idempotency: migrate bench-tools
	@$(PY) bench/idempotency.py

# The org change log's cost on a keyed write: with vs without (docs/benchmarks.md "Change log").
bench-changelog: migrate bench-tools
	@$(PY) bench/changelog_cost.py

# Finance summary from per-day totals vs from rows, 1 000 - 1 000 000 rows; the totals' write cost.
bench-summary: migrate bench-tools
	@$(PY) bench/summary_latency.py

# Edge cache: reads through Varnish vs straight to gunicorn (docs/benchmarks.md "Edge cache").
bench-edge: migrate bench-tools
	@$(PY) bench/edge.py

# Token + membership checks on the primary vs position-aware on a replica (docs/benchmarks.md "Access checks").
bench-access: migrate
	@$(PY) bench/access_checks.py

# Read replicas: mixed load with replicas on and off (docs/benchmarks.md "Read replicas").
bench-replicas: migrate
	@$(PY) bench/replicas_bench.py

# --- realtime benchmark (docs/benchmarks.md "Realtime") ---------------------------------
bench-realtime: migrate
	@$(PY) bench/realtime_fanout.py $(BENCH_ARGS)
	@$(PY) bench/realtime_fanout_layers.py

# Push: a burst of large expenses -> outbox worker -> push worker -> a local push server
# (docs/benchmarks.md "Push notifications"). BENCH_MEMBERS, BENCH_EXPENSES, BENCH_ROUNDS.
bench-push: migrate
	@$(PY) bench/push.py

# org_move: copy throughput vs a bare COPY, and the fence time, between main and a
# second real cluster (docs/benchmarks.md "Org moves"). BENCH_MOVE_SIZES, BENCH_MOVE_ROUNDS.
bench-org-move: migrate
	@$(PY) bench/org_move_bench.py

# Sync: pull and push vs the REST lists and creates (docs/benchmarks.md "Sync").
bench-sync: migrate
	@$(PY) bench/sync_bench.py

# --- load test (docs/benchmarks.md "Load test"): LOADTEST_DURATION, LOADTEST_USERS, ---
# LOADTEST_SPAWN_RATE, LOADTEST_WS_USERS, LOADTEST_ORGS; report in reports/loadtest-*/
loadtest: migrate
	@$(PY) loadtest/run.py
