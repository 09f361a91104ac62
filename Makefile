# Architecture Lab: every command a newcomer needs. A fresh clone gets everything with `make up`
# or `make test` alone: uv (pinned, from PyPI), the Python environment (uv.lock), Kafka's and Spark's jars
# (Maven Central) and MinIO (built with go install) are provisioned into the git-ignored .stack/.

SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3.11
UV_VERSION := 0.13.8
STACK := .stack
UV := $(STACK)/tools/bin/uv
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
LAB := .venv/bin/lab
PYTEST_ARGS ?=

.PHONY: help provision env up down infra-up infra-down infra-clean test test-unit test-integration test-e2e bench bench-steady chaos lint

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(UV):
	@echo "[env] installing uv $(UV_VERSION) into $(STACK)/tools"
	@$(PYTHON) -m venv $(STACK)/tools && $(STACK)/tools/bin/pip install -q "uv==$(UV_VERSION)"

# The notebooks group (JupyterLab, nbclient, and through outside-readers pyspark and polars) serves `make up`'s
# notebook service and the tests: the services' image installs none of it.
.venv/.synced: $(UV) pyproject.toml uv.lock
	@$(UV) sync --frozen --quiet --group notebooks
	@touch $@

# nbstripout as the git filter of notebooks (.gitattributes): `git add` stores a notebook without outputs.
# The command is relative (git runs filters at the top of the work tree), so each checkout uses its own venv.
env: .venv/.synced ## create the Python environment from uv.lock (and the notebooks' git filter)
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  git config filter.nbstripout.clean .venv/bin/nbstripout && git config filter.nbstripout.smudge cat; fi

# .env.example's notebook token is a placeholder: every .env gets a token of its own, generated here (an
# older .env without one gets it added), because JupyterLab runs whatever code its visitor types.
NEW_TOKEN = $$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))')
.env: .env.example
	@if [[ ! -f .env ]]; then \
	  sed "s|^LAB_NOTEBOOK_TOKEN=.*|LAB_NOTEBOOK_TOKEN=$(NEW_TOKEN)|" .env.example > .env \
	  && echo "[env] created .env from .env.example (dev-only S3 secrets, a generated notebook token)"; \
	elif ! grep -q '^LAB_NOTEBOOK_TOKEN=.' .env; then \
	  echo "LAB_NOTEBOOK_TOKEN=$(NEW_TOKEN)" >> .env && echo "[env] added a generated LAB_NOTEBOOK_TOKEN to .env"; \
	fi
	@touch .env

provision: env ## fetch Kafka's and Spark's jars and build MinIO into .stack/ (cached, pinned)
	@bash scripts/provision.sh

up: provision .env ## start Kafka, MinIO and every service; Ctrl-C stops everything
	@exec $(LAB) up

down: env ## stop everything `make up` started
	@$(LAB) down

infra-up: provision .env ## start only Kafka and MinIO (background) and create bucket + topics
	@$(LAB) infra up

infra-down: env ## stop Kafka and MinIO
	@$(LAB) infra down

infra-clean: env ## stop Kafka and MinIO and delete their data
	@$(LAB) infra clean

test: provision ## the whole suite (unit + integration + e2e) against real Kafka and MinIO
	@.venv/bin/python -m pytest tests $(PYTEST_ARGS)

test-unit: env ## unit tests only (no infrastructure)
	@.venv/bin/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: provision ## integration tests against real Kafka and MinIO
	@.venv/bin/python -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: provision ## whole-system tests
	@.venv/bin/python -m pytest tests/e2e $(PYTEST_ARGS)

bench: provision ## end-to-end benchmark (1M orders; BENCH_ARGS="--events 300000"); per service: BENCH_ARGS=silver, or services
	@.venv/bin/python -m bench $(BENCH_ARGS)

bench-steady: provision ## the whole system at its demo rate for 5 minutes: CPU and RSS per process (BENCH_ARGS="--steady-seconds 120")
	@.venv/bin/python -m bench pipeline --steady $(BENCH_ARGS)

chaos: provision ## 500k events while services are kill -9ed, Kafka restarted, MinIO stopped; verdict (CHAOS_ARGS)
	@.venv/bin/python -m bench.chaos $(CHAOS_ARGS)

lint: env ## import order and unused names (ruff)
	@.venv/bin/ruff check archlab services bench ui tests
