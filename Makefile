# Handshake — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
POLICIES ?= policies

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/handshake: pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

install: $(BIN)/handshake ## create .venv with the pinned dependencies and the package

# Tools nobody here wrote, for the contract: Redocly's linter, openapi-typescript, tsc (npm).
CONTRACT_TOOLS := tools/contract/node_modules/.bin
$(CONTRACT_TOOLS)/redocly: tools/contract/package-lock.json
	npm ci --prefix tools/contract --no-audit --no-fund --loglevel=error
	@touch $@

run: install ## check and test the bundled policies, then serve them on 127.0.0.1:8080
	$(BIN)/handshake check $(POLICIES)
	$(BIN)/handshake test $(POLICIES)
	$(BIN)/handshake serve --policies $(POLICIES)

eval: install ## evaluate a sample request from the command line, with --explain
	$(BIN)/handshake eval default --policies $(POLICIES) --input examples/requests/stranger.json --explain

lint: install $(CONTRACT_TOOLS)/redocly ## ruff, mypy --strict on service/, the import layers, the contract (Redocly)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(CONTRACT_TOOLS)/redocly lint --format=summary openapi/openapi.yaml

fmt: install ## format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

browser: ## Debian's Chromium for the browser tests, unless HANDSHAKE_CHROMIUM names one (apt, root)
	@test -n "$$HANDSHAKE_CHROMIUM" || command -v chromium >/dev/null || { \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: lint browser ## every check: lint, types, unit, property and browser tests, bundled policy suites
	$(BIN)/pytest
	$(BIN)/handshake check $(POLICIES)
	$(BIN)/handshake test $(POLICIES)

bench: install ## microseconds per decision for the starter policies, in process (ARGS=--pieces: where it goes)
	$(BIN)/python bench/evaluate.py $(ARGS)

bench-http: install ## HTTP: bare, /evaluate per engine, batch, Cerbos (needs wrk, npm; ARGS=...)
	$(BIN)/python bench/throughput.py $(ARGS)

bench-scale: install ## many policies (serve, reload, check) and many rules (ARGS=--policies 100,1000,10000)
	$(BIN)/python bench/scale.py $(ARGS)

bench-ab: install ## HTTP A/B against another revision, side by side (BASE=<rev>; needs wrk)
	$(BIN)/python bench/ab.py --base $(BASE) $(ARGS)

image: ## build the container image with podman (offline), start it, get a decision (root)
	bash deploy/build-image.sh

openapi: install ## regenerate openapi/openapi.yaml from the app
	$(BIN)/handshake openapi

lock: ## re-pin requirements/*.lock from pyproject.toml (needs uv)
	uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements/dev.lock
	uv pip compile pyproject.toml --extra tracing --python-version 3.11 -o requirements/runtime.lock

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis tools/contract/node_modules

.PHONY: help install run eval lint fmt browser test bench bench-http image openapi lock clean
