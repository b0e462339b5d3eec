# The front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RIG_ENV := .rig/env
# the e2e suite's tmp_path dirs (operator logs among them), searched by tests/e2e_after
E2E_BASETEMP := .rig/pytest-e2e

.PHONY: help install lint format unit rig rig-down e2e test demo bench bench-runtime \
	bench-scaling bench-observing bench-observing-shards bench-companion bench-guard agents-venvs \
	verify generate clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,operator,rtc]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv with the project (editable) and dev extras
	@echo "venv ready: $(VENV)"

lint: install ## ruff, mypy --strict, import-linter, stale generated files, versions that disagree
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m hack.generate --check
	$(BIN)/python -m hack.check_version

format: install ## Format the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

generate: install ## Regenerate the chart's copy of the CRD and docs/reference.md
	$(BIN)/python -m hack.generate

verify: lint ## Alias: fails when a generated file is stale

unit: install ## Unit tests of the pure modules and the sync loop's simulation (no rig)
	$(BIN)/pytest tests/unit -q -n 2 --dist loadgroup

rig: install ## Build (cached) and start the rig; writes .rig/env
	$(BIN)/python -m tests.rig up

rig-down: ## Stop what `make rig` started
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m tests.rig down; fi

# Two at a time (each test has its own namespace, operator and agent name), a file per process
# (a file's tests may share a fleet); then the tests that restart or pause a server of the rig
# (marker `alone`), by themselves; then the search for leaked secrets.
E2E_PROCESSES ?= 2

e2e: rig agents-venvs ## End-to-end tests against the rig, then the search for leaked secrets
	mkdir -p $(E2E_BASETEMP); set -a; . $(RIG_ENV); set +a; \
	$(BIN)/pytest tests/integration tests/e2e -q -m "not alone" -n $(E2E_PROCESSES) --dist loadfile \
		--durations=25 --basetemp=$(E2E_BASETEMP)/shared; shared=$$?; \
	$(BIN)/pytest tests/e2e -q -m alone --durations=10 --basetemp=$(E2E_BASETEMP)/alone; alone=$$?; \
	$(BIN)/pytest tests/e2e_after -q; after=$$?; \
	test $$shared -eq 0 && test $$alone -eq 0 && test $$after -eq 0

test: install ## Install; lint, unit tests, the rig and the agents' venvs side by side; then end-to-end tests
	$(MAKE) --no-print-directory --output-sync=target -j4 lint unit rig agents-venvs
	$(MAKE) --no-print-directory e2e

demo: rig ## The main job: the chart's operator, an autoscaled fleet, real calls, live view, plot
	set -a; . $(RIG_ENV); set +a; $(BIN)/python -m hack.demo

bench: bench-runtime bench-scaling bench-observing bench-companion bench-guard ## Every benchmark (results in bench/results/)

bench-runtime: rig ## This runtime side by side with livekit-agents
	set -a; . $(RIG_ENV); set +a; $(BIN)/python -m bench.runtime

bench-scaling: rig ## Scale-up reaction; a plain Deployment's scale-down against the operator's
	set -a; . $(RIG_ENV); set +a; $(BIN)/python -m bench.scaling

bench-observing: rig ## The operator's CPU and memory observing 1,000 workers every 5 s, with its long polls and without
	set -a; . $(RIG_ENV); set +a; $(BIN)/python -m bench.observing

bench-observing-shards: rig ## The same at 5,000 workers: one operator process against 2 and 4 shards
	set -a; . $(RIG_ENV); set +a; $(BIN)/python -m bench.observing --agentworkers 50 \
		--sides one shards-2 shards-4 --status-lag 30 --verify-timeout 300 --name observing-shards

bench-companion: rig ## The official worker with and without the companion: overhead, scale-down
	set -a; . $(RIG_ENV); set +a; $(BIN)/python -m bench.companion

bench-guard: rig ## The dispatch guard on against off: from zero, a full fleet, a burst
	set -a; . $(RIG_ENV); set +a; $(BIN)/python -m bench.guard

agents-venvs: install ## A venv per tested livekit-agents release, cached in ~/.cache/agentworker
	$(BIN)/python -m bench.venv

.PHONY: images push-images
images: ## Build the operator, worker and example agent images (docker, podman or buildah); REGISTRY=, TAG= name them
	hack/images.sh

push-images: ## Push the images `make images` built to REGISTRY (the same REGISTRY= and TAG=)
	hack/images.sh push

clean: rig-down ## Remove the rig state and the venv
	rm -rf .rig $(VENV)
