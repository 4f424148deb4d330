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
	@echo "make lint   - ruff check, ruff format --check, makemigrations --check, mypy"
	@echo "make loadtest - 100 000 orgs, Locust through the edge with a fault drill, report in reports/"
	@echo "benchmarks (docs/benchmarks.md): make bench-serving | bench-idempotency | bench-replicas |"
	@echo "    bench-realtime | bench-edge | bench-metrics | bench-changelog | bench-access | bench-push |"
	@echo "    bench-outbox-fanout | bench-sync | bench-summary | bench-origin | bench-org-move |"
	@echo "    bench-redis-cluster | bench-storage | bench-inprocess-ab | bench-inprocess-ratio"

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

# The two-cluster tests use a second database cluster, and the Redis-topology pass a Redis
# Cluster: both start here, before the suite churns through ephemeral ports. Their default
# ports (the database cluster's, the Redis Cluster nodes' buses at REDIS_CLUSTER_PORT+10000)
# lie in Linux's ephemeral range, where a test's outgoing connection, or one still in
# TIME_WAIT after the suite, holds a port a server cannot bind (seen: a Redis Cluster node
# that failed to start after the main pass). Only those tests use them.
test: venv stack tools client-deps
	@bin/stack cluster-up 2
	$(if $(PYTEST_ARGS),,@if [[ -z "$$(bin/stack env | sed -n 's/^REDIS_CLUSTER_NODES=//p')" ]]; then bin/stack redis-cluster-up; fi)
	@$(VENV)/bin/pytest $(PYTEST_ARGS)
	$(if $(PYTEST_ARGS),,@$(MAKE) --no-print-directory test-redis-topologies)

# The Redis-dependent tests (idempotency, caps, positions, events and resume, throttles,
# key slots) once more on the other Redis topology: on a Redis Cluster after a
# single node's run, on a single node after a cluster's (REDIS_MODE=cluster). The failover
# tests (tests/test_redis_cluster_failover.py) bring their own cluster: main pass only.
# docs/redis.md
REDIS_TESTS := tests/test_redis_keys.py tests/test_idempotency.py tests/test_idempotency_live.py \
	tests/test_idempotency_after_commit.py \
	tests/test_realtime_events.py tests/test_realtime_resume.py tests/test_realtime_limits.py \
	tests/test_replicas_routing.py tests/test_login_throttle.py
.PHONY: test-redis-topologies
test-redis-topologies: venv
	@if [[ -n "$$(bin/stack env | sed -n 's/^REDIS_CLUSTER_NODES=//p')" ]]; then \
	  echo "==> Redis-dependent tests on a single Redis node"; \
	  REDIS_CLUSTER_NODES= $(VENV)/bin/pytest -q $(REDIS_TESTS); \
	else \
	  bin/stack redis-cluster-up && echo "==> Redis-dependent tests on the Redis Cluster" && \
	  REDIS_CLUSTER_NODES=$$(bin/stack redis-cluster-nodes) $(VENV)/bin/pytest -q $(REDIS_TESTS); \
	fi

# Metrics overhead: a bare endpoint with and without the metrics middleware.
bench-metrics: migrate bench-tools
	@$(PY) bench/metrics_overhead.py

lint: venv
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@# Models against migration files only: with no database up (a fresh clone lints before
	@# the stack starts), the migration-history check gives up after one attempt.
	@SECRET_KEY=$${SECRET_KEY:-lint-only-not-a-secret} DB_POOL_TIMEOUT_SECONDS=0.5 DB_MIN_CONNECTIONS=0 \
	  $(PY) -W "ignore:Got an error checking a consistent migration history" manage.py makemigrations --check --dry-run
	@SECRET_KEY=$${SECRET_KEY:-lint-only-not-a-secret} $(VENV)/bin/mypy

stop:
	@bin/stack down

destroy:
	@bin/stack destroy

# --- benchmarks (not tests: they print ratios and percentiles; see docs/benchmarks.md) ---
.PHONY: bench-tools bench-serving bench-idempotency bench-changelog bench-edge bench-replicas bench-realtime bench-metrics bench-access bench-push bench-sync bench-summary bench-origin bench-inprocess-ab bench-inprocess-ratio bench-org-move
bench-tools:
	@bin/ensure-tools wrk

bench-serving: migrate bench-tools
	@$(PY) bench/serving.py

bench-idempotency: migrate bench-tools
	@$(PY) bench/idempotency.py

# The org change log's cost on a keyed write: with vs without (docs/benchmarks.md "Change log").
# BENCH_ORGS (64; 1: every write into one org), BENCH_ROUNDS (4), BENCH_SECONDS (8).
bench-changelog: migrate bench-tools
	@$(PY) bench/changelog_cost.py

# Bytes on disk per org and per row (scratch database; docs/scale-out.md "Capacity").
.PHONY: bench-storage
bench-storage: migrate
	@$(PY) bench/storage_per_org.py

# Finance summary from per-day totals vs from rows, 1 000 - 1 000 000 rows; the totals' write cost.
bench-summary: migrate bench-tools
	@$(PY) bench/summary_latency.py

# The origin (straight to gunicorn) vs a bare DRF service: keyed create, list, detail, summary
# (docs/performance.md, docs/benchmarks.md "Origin"). BENCH_SECONDS, BENCH_ROUNDS; BENCH_PROFILE=dir adds py-spy profiles.
bench-origin: migrate bench-tools
	@$(PY) bench/origin.py

# A cut's CPU saving per keyed create, with and without it alternating in one process
# (BENCH_AB=riders | django-prometheus; BENCH_ROUNDS 30, BENCH_BLOCK 100): bench/inprocess_ab.py
bench-inprocess-ab: migrate
	@$(PY) bench/inprocess_ab.py

# Our keyed create's CPU against bare DRF's, each in its own process, in turns (issue 17).
bench-inprocess-ratio: migrate
	@$(PY) bench/inprocess_ratio.py

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
# (docs/benchmarks.md "Push notifications"). BENCH_MEMBERS, BENCH_EXPENSES, BENCH_ROUNDS, BENCH_RATE.
bench-push: migrate
	@$(PY) bench/push.py

# The outbox worker's CPU per change running the push fan-out (docs/push.md "Fan-out cost").
# BENCH_ORGS, BENCH_EXPENSES, BENCH_BATCH, BENCH_ROUNDS.
.PHONY: bench-outbox-fanout
bench-outbox-fanout: migrate
	@$(PY) bench/outbox_fanout_cpu.py

# org_move: copy throughput vs a bare COPY, and the fence time, between main and a
# second real cluster (docs/benchmarks.md "Org moves"). BENCH_MOVE_SIZES, BENCH_MOVE_ROUNDS.
bench-org-move: migrate
	@$(PY) bench/org_move_bench.py

# Sync: pull and push vs the REST lists and creates (docs/benchmarks.md "Sync").
bench-sync: migrate
	@$(PY) bench/sync_bench.py

# Redis Cluster vs one node (docs/benchmarks.md "Redis Cluster"): the idempotency and the
# realtime benchmarks once per topology, in one run, single node first.
.PHONY: bench-redis-cluster
bench-redis-cluster: migrate bench-tools
	@bin/stack redis-cluster-up
	@for nodes in "" "$$(bin/stack redis-cluster-nodes)"; do \
	  echo "==> REDIS_CLUSTER_NODES=$$nodes"; \
	  REDIS_CLUSTER_NODES=$$nodes $(PY) bench/idempotency.py || exit 1; \
	  REDIS_CLUSTER_NODES=$$nodes $(PY) bench/realtime_fanout.py $(BENCH_ARGS) || exit 1; \
	done

# --- load test (docs/benchmarks.md "Load test"): LOADTEST_DURATION, LOADTEST_USERS, ---
# LOADTEST_SPAWN_RATE, LOADTEST_WS_USERS, LOADTEST_ORGS; report in reports/loadtest-*/
loadtest: migrate
	@$(PY) loadtest/run.py
