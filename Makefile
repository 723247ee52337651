# flamingock_provider — set-up commands. `make demo` and `make test` work on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   := $(CURDIR)/.demo

.PHONY: install demo test lint services bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[all,dev]"
	touch $@

install: $(STAMP)

## demo: run the example DAG end to end on the embedded SQLite audit store
demo: install
	@mkdir -p $(DEMO)
	@AIRFLOW_HOME=$(DEMO)/airflow AIRFLOW__CORE__LOAD_EXAMPLES=False \
	  $(VENV)/bin/airflow db migrate > $(DEMO)/migrate.log 2>&1 \
	  || { cat $(DEMO)/migrate.log; exit 1; }
	@echo "Running DAG flamingock_example (log: .demo/last-run.log) ..."
	@AIRFLOW_HOME=$(DEMO)/airflow AIRFLOW__CORE__LOAD_EXAMPLES=False \
	  AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	  AIRFLOW_CONN_FLAMINGOCK_DEFAULT='{"conn_type": "flamingock_sql", "extra": {"url": "sqlite:///$(DEMO)/audit.db"}}' \
	  AIRFLOW_CONN_FLAMINGOCK_DEMO_SHOP='{"conn_type": "flamingock_sql", "extra": {"url": "sqlite:///$(DEMO)/shop.db"}}' \
	  $(VENV)/bin/airflow dags test flamingock_example > $(DEMO)/last-run.log 2>&1 \
	  || { tail -40 $(DEMO)/last-run.log; exit 1; }
	@$(PY) .ci/demo_report.py $(DEMO)/last-run.log $(DEMO)/audit.db

## test: install, start the test servers, lint, run the whole suite
test: install services
	$(VENV)/bin/ruff check .
	FLAMINGOCK_TEST_REQUIRE_SERVERS=1 $(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

services:
	@bash .ci/services

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache .mypy_cache

## bench: measure against the raw-driver floor and alembic; writes docs/benchmarks.md
bench: install services
	$(PY) bench/run.py
