# SEMS developer entry points. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run run-kafka run-production test test-unit lint typecheck bench bench-kafka bench-influx bench-api bench-forecast bench-startup bench-dr-stall bench-all soak services schemas clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "SEMS needs Python >= 3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP)  ## embedded default: local runtime, SQLite, simulator of 3 facilities, API on :8080
	$(VENV)/bin/sems run

run-kafka: $(STAMP) services  ## the kafka runtime: a local Kafka broker, ingest + worker + API
	infra/local/kafka.sh start
	$(VENV)/bin/sems run --runtime kafka

run-production: $(STAMP) services  ## production profile on local servers: Kafka, InfluxDB, PostgreSQL, Redis
	infra/local/kafka.sh start
	infra/local/influxdb.sh start
	infra/local/postgres.sh start
	infra/local/redis.sh start
	$(VENV)/bin/sems db upgrade
	$(VENV)/bin/sems run --profile production

services:  ## install the servers the tests start (Mosquitto, Kafka jars, InfluxDB, PostgreSQL, Redis)
	infra/local/install-services.sh

test: $(STAMP) services lint  ## lint, then the whole suite: unit, contract, integration on real servers, end to end
	$(PY) -m pytest

test-unit: $(STAMP)
	$(PY) -m pytest -m unit -q

lint: $(STAMP)  ## ruff, mypy --strict, and the layers (import-linter: docs/architecture.md)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

schemas: $(STAMP)  ## regenerate schemas/json after changing a model
	$(PY) -m schemas.export

bench: $(STAMP) services  ## ingest throughput beside the broker's own; see docs/performance.md
	$(PY) -m bench.ingest

bench-kafka: $(STAMP) services  ## the kafka runtime end to end and per worker, beside the local runtime
	$(PY) -m bench.kafka

bench-influx: $(STAMP) services  ## InfluxDB writes through SEMS beside raw line-protocol posts
	$(PY) -m bench.influx

bench-api: $(STAMP) services  ## the API: routes beside /healthz, 500 req/s with Redis beside no cache, 1 vs 2 processes, start-up (needs wrk); exits 1 on a missed target
	$(PY) -m bench.api

bench-forecast: $(STAMP)  ## the 15-min forecast cycle for 100 and 1,000 facilities, beside seasonal naive
	$(PY) -m bench.forecast --facilities 100 1000 --repeat 3

bench-startup: $(STAMP)  ## /current latency while sems run starts, backfills and chooses models, beside the idle process
	$(PY) -m bench.startup --runs 3

bench-dr-stall: $(STAMP)  ## event-loop lag while DR plans and reports run inline, on a thread, in a worker process
	$(PY) -m bench.dr_stall --runs 3

BENCH_ALL_ARGS ?=
bench-all: $(STAMP) services  ## every benchmark, then one table of ratios against their baselines and targets
	$(PY) -m bench.all $(BENCH_ALL_ARGS)

SOAK_S ?= 600
SOAK_ARGS ?=
soak: $(STAMP) services  ## hostile-traffic soak of make run's system (SOAK_S seconds, default 600; SOAK_ARGS e.g. --json soak.json); docs/reliability.md
	$(PY) -m bench.soak --duration-s $(SOAK_S) $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .run .cache
