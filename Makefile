# StreamFlow: the commands a newcomer needs. Everything installs what it needs on first use.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
UV_VERSION := $(shell sed -n 's/^UV_VERSION=//p' config/versions.env)
UV := uv
# Prefer Debian's CPython 3.11: built with PGO and LTO, it runs this project's pure-Python hot
# path ~2.8x faster than a default source build such as pyenv's (docs/benchmarks.md).
export UV_PYTHON ?= $(shell test -x /usr/bin/python3.11 && echo /usr/bin/python3.11 || echo 3.11)
DEMO := .demo
# Installed packages come with their bytecode: where PYTHONDONTWRITEBYTECODE is set, every command
# would otherwise compile dbt's and Airflow's sources at import (~2.5 s per `warehouse build`).
export UV_COMPILE_BYTECODE := 1
PYTEST_ARGS ?=

.PHONY: help setup postgres lua compile demo demo-replay infra-up infra-down bench-streaming bench-detection test lint bench schemas model crd cluster cluster-down cluster-build operator e2e-kind clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# uv from PyPI (pinned), then the locked environment.
.venv/.synced: pyproject.toml uv.lock Makefile
	@command -v uv >/dev/null 2>&1 && uv --version | grep -q "$(UV_VERSION)" || \
		python3 -m pip install --quiet --user "uv==$(UV_VERSION)" 2>/dev/null || \
		python3 -m pip install --quiet "uv==$(UV_VERSION)"
	@# Recreate the venv when it was built on another interpreter than UV_PYTHON.
	@test ! -x .venv/bin/python || [ "$$(readlink -f .venv/bin/python)" = "$$(readlink -f $$(command -v $(UV_PYTHON) || echo $(UV_PYTHON)))" ] || rm -rf .venv
	$(UV) sync --frozen
	@touch $@

# The detector's hot path (per-customer state and the rules evaluator) compiled with mypyc:
# ~2.7x faster than interpreted (docs/benchmarks.md), and the repeated-key scan of every event in
# C (_jsonkeys.c). The .so files sit next to their sources (extension modules win over .py);
# jobs/streamflow_jobs/_compiled.py refuses a stale build.
COMPILED := streamflow_jobs/state.py streamflow_jobs/rules/evaluator.py
C_EXTENSIONS := streamflow_jobs/_jsonkeys.c
jobs/streamflow_jobs/.compiled: .venv/.synced $(addprefix jobs/,$(COMPILED) $(C_EXTENSIONS)) | build
	find jobs -name '*.cpython-*.so' -delete
	cd jobs && ../.venv/bin/python -m mypyc $(COMPILED) > ../build/mypyc.log 2>&1 || \
		{ cat ../build/mypyc.log; exit 1; }
	for c in $(C_EXTENSIONS); do \
		.venv/bin/python -c 'import sys, sysconfig as s; from setuptools._distutils.ccompiler import new_compiler; from setuptools._distutils.sysconfig import customize_compiler; c = new_compiler(); customize_compiler(c); src = sys.argv[1]; obj = c.compile([src], output_dir="build", include_dirs=[s.get_paths()["include"]], extra_postargs=["-O2"]); c.link_shared_object(obj, src[:-2] + s.get_config_var("EXT_SUFFIX"))' jobs/$$c || exit 1; \
	done
	.venv/bin/python jobs/streamflow_jobs/_compiled.py --record $(COMPILED) $(C_EXTENSIONS)
	@touch $@

compile: jobs/streamflow_jobs/.compiled  ## compile the detector hot path with mypyc

setup: .venv/.synced jobs/streamflow_jobs/.compiled  ## install uv, the Python environment, compile

demo-replay: setup  ## the batch demo: generate -> train -> replay -> report (text + PNG) in .demo/
	@mkdir -p $(DEMO)
	$(UV) run streamflow generate --events 100000 --seed 42 --output $(DEMO)/tx.jsonl \
		--labels $(DEMO)/labels.jsonl --rules-output $(DEMO)/rules.yaml
	$(UV) run streamflow train --seed 7 --output $(DEMO)/model.json
	$(UV) run streamflow replay --input $(DEMO)/tx.jsonl --output $(DEMO)/decisions.jsonl \
		--dlq $(DEMO)/dead-letters.jsonl --rules $(DEMO)/rules.yaml --model $(DEMO)/model.json \
		--labels $(DEMO)/labels.jsonl
	$(UV) run streamflow report --decisions $(DEMO)/decisions.jsonl --labels $(DEMO)/labels.jsonl \
		--output-dir $(DEMO)

# The live pipeline (issue 13): Kafka -> the three Flink jobs -> alerts, then a report. Starts
# the local infrastructure if needed (Maven jars and Debian's PostgreSQL on first use) and stops
# what it started. DEMO_EVENTS at DEMO_RATE events/s.
DEMO_EVENTS ?= 20000
DEMO_RATE ?= 2000
demo: setup postgres  ## live: generate -> Kafka -> 3 Flink jobs -> alerts -> report (.demo/)
	@mkdir -p $(DEMO)
	$(UV) run streamflow generate --events $(DEMO_EVENTS) --seed 42 --output $(DEMO)/tx.jsonl \
		--labels $(DEMO)/labels.jsonl --rules-output $(DEMO)/rules.yaml
	$(UV) run streamflow live --input $(DEMO)/tx.jsonl --alerts $(DEMO)/alerts.jsonl \
		--dlq $(DEMO)/dead-letters.jsonl --summary $(DEMO)/live-summary.json \
		--rules $(DEMO)/rules.yaml --rate $(DEMO_RATE)
	$(UV) run streamflow live-report --summary $(DEMO)/live-summary.json \
		--alerts $(DEMO)/alerts.jsonl --labels $(DEMO)/labels.jsonl --output-dir $(DEMO)

infra-up: setup postgres  ## start Kafka, PostgreSQL and Flink on 127.0.0.1 (state in .infra/)
	$(UV) run streamflow infra up

infra-down:  ## stop what infra-up started
	$(UV) run streamflow infra down

# Debian's PostgreSQL for the integration tests: apt-get once (as root, or through sudo).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		$$sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }

# Debian's Lua 5.1 (ArgoCD's Lua) for the health check's test: apt-get once.
lua:
	@command -v lua5.1 >/dev/null 2>&1 || { \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		$$sudo apt-get install -y -qq --no-install-recommends lua5.1 >/dev/null; }

# promtool (Prometheus' rule checker) for the alert rules' tests: built once from its Go module
# (e2e/cluster/build.sh, ~6.5 min cold), cached under ~/.cache/streamflow/bin.
PROMETHEUS_VERSION := $(shell sed -n 's/^PROMETHEUS_VERSION=//p' config/versions.env)
promtool:
	@test -x "$${STREAMFLOW_CACHE:-$$HOME/.cache/streamflow}/bin/promtool-$(PROMETHEUS_VERSION)" || \
		e2e/cluster/build.sh promtool

.PHONY: promtool monitoring
monitoring: setup  ## regenerate config/monitoring/ (PrometheusRule, Grafana dashboards)
	$(UV) run python config/monitoring/build.py

test: setup postgres lua promtool  ## lint, type-check and run every test
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy jobs/streamflow_jobs operator/streamflow_operator
	$(UV) run pytest $(PYTEST_ARGS)

lint: setup  ## ruff (lint + format check) and mypy --strict
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy jobs/streamflow_jobs operator/streamflow_operator

bench: setup postgres  ## measure the detector, the operator and the warehouse; writes docs/benchmarks.md
	$(UV) run python -m streamflow_jobs.bench
	$(UV) run python -m streamflow_jobs.bench_detection
	$(UV) run python -m tests.e2e.bench
	$(UV) run python -m tests.integration.bench_warehouse
	$(MAKE) bench-streaming

bench-detection: setup  ## detection quality per generated world and model kind; replay with a shadow
	$(UV) run python -m streamflow_jobs.bench_detection

bench-streaming: setup postgres  ## the Flink jobs: throughput, latency, checkpoints, recovery
	$(UV) run python -m streamflow_jobs.flink.bench

schemas: setup  ## regenerate the JSON Schemas of the event contracts
	$(UV) run streamflow schemas

model: setup  ## retrain the shipped models from the reference world (reproducible: seed 7)
	$(UV) run streamflow train --seed 7 --output jobs/streamflow_jobs/model/default_model.json
	$(UV) run streamflow train --seed 7 --unsupervised --output jobs/streamflow_jobs/model/iforest_model.json

crd: setup  ## regenerate crds/ (and the chart's copy) from the operator's spec models
	$(UV) run streamflow crd

cluster-build:  ## build etcd, kube-apiserver, controller manager (cached in ~/.cache/streamflow)
	e2e/cluster/build.sh etcd kube-apiserver kube-controller-manager

cluster: setup  ## start a local control plane (+ scheduler, kwok node) and CRDs
	STREAMFLOW_CLUSTER_NODES=1 e2e/cluster/up.sh
	@echo "export KUBECONFIG=$(CURDIR)/.cluster/kubeconfig"

cluster-down:  ## stop the local control plane
	e2e/cluster/down.sh

e2e-kind: setup  ## needs Docker + network: kind, Strimzi, Flink operator, CNPG, our images and chart, events in, alerts out
	e2e/kind/run.sh

operator: setup  ## run the operator against $$KUBECONFIG (default: the local cluster)
	KUBECONFIG=$${KUBECONFIG:-$(CURDIR)/.cluster/kubeconfig} $(UV) run kopf run \
		-m streamflow_operator.handlers --all-namespaces --standalone \
		--liveness=http://127.0.0.1:8081/healthz

# The sample's model: the shipped artifact as ConfigMap payments-model-v1 in namespace fraud,
# labelled so that the operator watches it (override MODEL_NAME / MODEL_NAMESPACE / MODEL_FILE).
.PHONY: publish-model
MODEL_NAME ?= payments-model-v1
MODEL_NAMESPACE ?= fraud
MODEL_FILE ?= jobs/streamflow_jobs/model/default_model.json
# kubectl from the machine, else the one e2e/cluster/up.sh built (make cluster).
KUBECTL = $(or $(shell command -v kubectl),$(or $(STREAMFLOW_CACHE),$(HOME)/.cache/streamflow)/path/kubectl) \
	--kubeconfig $(or $(KUBECONFIG),$(CURDIR)/.cluster/kubeconfig)
publish-model:  ## publish a model artifact as the ConfigMap a FraudPipeline references
	$(KUBECTL) create configmap $(MODEL_NAME) -n $(MODEL_NAMESPACE) \
		--from-file=model.json=$(MODEL_FILE) --dry-run=client -o yaml | \
		$(KUBECTL) label --local -f - -o yaml app.kubernetes.io/part-of=streamflow | \
		$(KUBECTL) apply --server-side --field-manager=streamflow-publish-model -f -

build:
	@mkdir -p build

clean:  ## remove generated outputs and compiled modules
	rm -rf $(DEMO) .bench build jobs/build jobs/*__mypyc*.so jobs/streamflow_jobs/.compiled \
		jobs/streamflow_jobs/_compiled.json
	find jobs -name '*.cpython-*.so' -delete

.PHONY: warehouse bench-warehouse

warehouse: setup  ## migrations + dbt build of silver and gold on the local database (infra up)
	$(UV) run streamflow warehouse build

bench-warehouse: setup postgres  ## measure the warehouse builds (1M rows); writes docs/benchmarks.md
	$(UV) run python -m tests.integration.bench_warehouse

# Shipping (issue 16): the wheel and the three images.
.PHONY: wheel images
# The cp311 platform wheel in dist/, carrying the compiled hot path (hatch_build.py refuses a stale
# or missing `make compile`); built beside, then moved in (never a half wheel under its name).
wheel: jobs/streamflow_jobs/.compiled  ## the platform wheel with the compiled hot path (dist/)
	rm -rf build/wheel.tmp
	$(UV) build --wheel --quiet --out-dir build/wheel.tmp
	mkdir -p dist && rm -f dist/streamflow-*.whl && mv build/wheel.tmp/streamflow-*.whl dist/
	rm -rf build/wheel.tmp

# The operator, jobs and Airflow images with podman (installed on first use); IMAGES=operator
# builds one. A rebuild reuses podman's cached layers (only a changed wheel's layers are redone).
IMAGES ?= operator jobs airflow
images: wheel  ## build the container images (podman): operator, jobs, airflow
	config/images/build.sh $(IMAGES)

.PHONY: bench-images
bench-images: wheel  ## cold and warm `make images` times and the image sizes; docs/benchmarks.md
	$(UV) run python -m tests.images.bench
