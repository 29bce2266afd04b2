# pgx-cds: the two set-up commands are `make run` and `make test` (README "Quick start").
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed-test
# the peer the benchmark compares with (HealthChain pins its own FastAPI/pydantic: a venv of its own)
PEER_VENV ?= .venv-peer
PEER_STAMP := $(PEER_VENV)/.installed

.PHONY: run test install bench bench-screen check-knowledge validate-deploy clean

$(RUN_STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## run the service on embedded defaults (in-process cache, built-in knowledge, dev mode on 127.0.0.1:8080)
## dev profile (unless PGX_CDS_PROFILE says otherwise): plain-http FHIR servers allowed, as a local sandbox uses
run: $(RUN_STAMP)
	export PGX_CDS_PROFILE=$${PGX_CDS_PROFILE:-dev}; \
	if [ "$$PGX_CDS_PROFILE" = dev ]; then export PGX_CDS_FHIR__ALLOW_HTTP=$${PGX_CDS_FHIR__ALLOW_HTTP:-true}; fi; \
	$(BIN)/pgx-cds serve

## install everything and run the whole test suite (starts its own real redis-server and FHIR server)
test: $(STAMP)
	bash tests/setup.sh
	$(BIN)/pgx-cds knowledge check
	$(BIN)/python -m pytest

$(PEER_STAMP):
	$(PY) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install --quiet healthchain==0.16.1
	touch $(PEER_STAMP)

## the benchmark (bench/, outside the service package): the distinct-patient mix first, then the hot paths
bench: $(STAMP) $(PEER_STAMP)
	bash tests/setup.sh
	$(BIN)/pgx-cds bench --peer-python $(PEER_VENV)/bin/python $(BENCH_ARGS)

## population screening benchmark (local engine, synthetic exports of 100k and 1M patients; ratios against the
## read+group pass alone; BENCH_SCREEN_ARGS="--engine both" adds Spark local[2] on 100k and compares worklists).
## On the interpreter a deployment runs (a PGO/LTO CPython, as in the python:3.11-slim image), e.g. Debian's:
##   make bench-screen PY=/usr/bin/python3.11 VENV=.venv-opt
bench-screen: $(STAMP)
	$(BIN)/python -m bench.screen --patients 100000 1000000 $(BENCH_SCREEN_ARGS)

check-knowledge: $(STAMP)
	$(BIN)/pgx-cds knowledge check

validate-deploy:
	bash .ci/validate-deploy.sh

clean:
	rm -rf $(VENV) $(PEER_VENV) .pytest_cache test-artifacts
