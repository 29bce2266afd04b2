# pgx-cds: the two set-up commands are `make run` and `make test` (README "Quick start").
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed-test

.PHONY: run test install bench check-knowledge validate-deploy clean

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

bench: $(STAMP)
	bash tests/setup.sh
	$(BIN)/pgx-cds bench

check-knowledge: $(STAMP)
	$(BIN)/pgx-cds knowledge check

validate-deploy:
	bash .ci/validate-deploy.sh

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
