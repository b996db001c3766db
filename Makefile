# The two commands: `make demo` and `make test`. Each sets everything up from a fresh clone:
# a .venv with Python 3.11+, the package installed editable with its test extras (redone only
# when pyproject.toml changes), and a real Kafka broker (see README.md).
SHELL := bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The first Python 3.11+ on PATH (override: make test PYTHON=/path/to/python3.12).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && { echo $$p; break; }; done)
# Extra options for `runfold kafka up` in `make kafka-up`, e.g. KAFKA_UP_ARGS="--port 19092".
KAFKA_UP_ARGS ?=
# Extra options for `runfold demo` in `make demo`, e.g. DEMO_ARGS="--port 19092 --runs 1000".
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: help install demo test test-unit test-reliability kafka-up kafka-down vectors

help:
	@echo "make demo               start Kafka, create the topics, run the demo"
	@echo "make test               unit + integration tests (starts its own broker)"
	@echo "make test-unit          tests that need no broker"
	@echo "make test-reliability   fault scenarios (slow), bad inputs, fuzz, SCRAM; docs/reliability.md"
	@echo "make kafka-up | kafka-down   the local broker alone"

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "error: Python 3.11+ not found on PATH (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# setup.py and the C source too: a changed consumers/service/_lane.c is rebuilt in place.
$(STAMP): pyproject.toml setup.py consumers/service/_lane.c | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

install: $(STAMP)

# `runfold demo` starts the local broker and creates the topics itself; --keep leaves the
# broker running so that the queries the summary suggests work right away
# (`make kafka-down` stops it).
demo: $(STAMP)
	$(BIN)/runfold demo --keep $(DEMO_ARGS)

# The web view's browser tests need Debian's Chromium: installed here when missing (as
# root; elsewhere they skip and say why).
test: $(STAMP)
	@.ci/ensure-chromium
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

# Every slow test (the fault scenarios and the rest), then the reliability and security
# suites' bounded tests, then docs/reliability.md's tables from the measured rows.
# Smaller: RELIABILITY_EVENTS=100000 RELIABILITY_KILLS=5 RELIABILITY_RUNS=1000 make ...
test-reliability: $(STAMP)
	$(BIN)/pytest -m slow $(PYTEST_ARGS)
	$(BIN)/pytest -m "not slow" tests/reliability tests/security $(PYTEST_ARGS)
	$(BIN)/python tests/reliability/report.py

kafka-up: $(STAMP)
	$(BIN)/runfold kafka up $(KAFKA_UP_ARGS)

kafka-down: $(STAMP)
	$(BIN)/runfold kafka down

# Regenerate tests/vectors/murmur2_partitions.json with the Java client's own murmur2.
vectors: $(STAMP)
	lib="$$($(BIN)/python -c 'from runfold.kafka.jars import kafka_lib; print(kafka_lib())')" && \
	java -cp "$$lib/*" tests/vectors/Murmur2Vectors.java > tests/vectors/murmur2_partitions.json
