# jestflow — `make run` runs the whole pipeline on the embedded demo data; `make test` runs the tests.
SHELL := /bin/bash
# Everything installs into a project virtual environment, .venv (created on first use): a stock Debian 12
# or Ubuntu 24.04 python3 is "externally managed" (PEP 668) and refuses pip. PYTHON=/path/to/python
# uses that interpreter instead, as it is.
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
JESTFLOW := $(PYTHON) -m jestflow
PIP := $(PYTHON) -m pip install --quiet --disable-pip-version-check -c constraints.txt
PRESET ?= demo
OUT ?= runs/$(PRESET)
DATA ?= data/$(PRESET)
STAMP := .make

.DEFAULT_GOAL := help

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: PRESET=$(PRESET) OUT=$(OUT) DATA=$(DATA) PYTHON=$(PYTHON)"

$(VENV)/bin/python:
	@python3 -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && python3 -m venv $(VENV); \
	  else echo "python3 -m venv failed: install python3-venv (Debian/Ubuntu: sudo apt-get install python3-venv), or run make PYTHON=/path/to/python" >&2; exit 1; fi; }
	@echo "created $(VENV) ($$($(VENV)/bin/python --version))"

# Installed once per interpreter: the stamp names it, so PYTHON=... installs into that one.
INSTALLED := $(STAMP)/installed-$(subst /,_,$(PYTHON))
$(STAMP)/installed: $(INSTALLED)
	@touch $@
$(INSTALLED): pyproject.toml constraints.txt $(filter $(VENV)/bin/python,$(PYTHON))
	@mkdir -p $(STAMP)
	$(PIP) -e ".[pipelines,test]"
	@touch $@

install: $(STAMP)/installed ## install jestflow and its dependencies (CPU torch) into $(PYTHON)

data: $(STAMP)/installed ## write the demo dataset for PRESET into DATA (skipped when present)
	$(JESTFLOW) data demo --preset $(PRESET) --out $(DATA)

run: $(STAMP)/installed ## the whole pipeline (reference -> score -> JEST & uniform -> evaluate -> report) on demo data
	$(JESTFLOW) run --preset $(PRESET) --data $(DATA) --out $(OUT)

$(STAMP)/services:
	@mkdir -p $(STAMP)
	@command -v prometheus >/dev/null && command -v prometheus-pushgateway >/dev/null && command -v chromium >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus prometheus-pushgateway chromium; }
	@touch $@

$(STAMP)/npm: tests/manifests/package.json
	@mkdir -p $(STAMP)
	cd tests/manifests && npm install --silent --no-audit --no-fund
	@touch $@

lint: $(STAMP)/installed ## ruff: lint and format check (configuration in pyproject.toml)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: $(STAMP)/installed ## ruff: fix what it can and format the code
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

FAST_TESTS := tests/unit tests/components tests/pipelines/test_compiled.py tests/pipelines/test_submit.py
test-fast: $(STAMP)/installed ## the edit-test loop (~2 min): unit, component (every KFP step) and compile tests; no training fixtures, services, Docker
	$(PYTHON) -m pytest -q -m "not slow" $(FAST_TESTS)

test: $(STAMP)/installed $(STAMP)/services $(STAMP)/npm ## all tests (smoke preset): builds the CPU image (starts dockerd if needed); the tests start Prometheus, Pushgateway, a GCS emulator, headless Chromium
	@$(MAKE) --no-print-directory image-cpu >$(STAMP)/image-cpu.log 2>&1 && echo "built $(IMAGE):$(VERSION) (log $(STAMP)/image-cpu.log)" || \
	  { tail -20 $(STAMP)/image-cpu.log; if [ -n "$$CI" ]; then echo "image build failed" >&2; exit 1; else \
	    echo "WARNING: CPU image not built; tests/images will skip"; fi; }
	$(PYTHON) -m pytest -q tests

compile: $(STAMP)/installed ## compile the pipeline into pipelines/compiled/ (the only way those files change)
	$(PYTHON) -m jestflow_pipelines.compile

KFP_HOST ?= http://localhost:8080
submit: $(STAMP)/installed ## submit the GPU pipeline to KFP_HOST (PARAMS="steps=2000 pool_uri=gs://..." EXPERIMENT=jestflow)
	$(JESTFLOW) submit --host $(KFP_HOST) --experiment $(or $(EXPERIMENT),jestflow) $(foreach p,$(PARAMS),--param $(p))

bench: $(STAMP)/installed ## curation benchmark: uniform at 5 budgets, every method on that ruler, 3 seeds, 95% intervals (~90 min on 2 cores) -> BENCHMARKS.md
	$(JESTFLOW) bench curation --preset bench --out bench/curation
	$(PYTHON) scripts/benchmarks_md.py bench/curation BENCHMARKS.md

bench-extended: $(STAMP)/installed ## make bench plus the LR sweep, reference strengths, a long-tail pool, selection precision and ablations (each timed; reuses finished runs)
	$(JESTFLOW) bench curation --preset bench --out bench/curation --extended
	$(PYTHON) scripts/benchmarks_md.py bench/curation BENCHMARKS.md

VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' src/jestflow/__init__.py)
BASE_IMAGE ?= jestflow-base:bookworm
CUDA_BASE_IMAGE ?= pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
IMAGE ?= ghcr.io/jestflow/jestflow
WHEEL = jestflow-$(VERSION)-py3-none-any.whl
DOCKER_BUILDKIT ?= 0
DOCKER_BUILD = DOCKER_BUILDKIT=$(DOCKER_BUILDKIT) docker build --network none -f images/Dockerfile --build-arg JESTFLOW_WHEEL=$(WHEEL)

wheelhouse: $(STAMP)/installed ## dist/: the jestflow wheel and every dependency's wheel (offline image builds)
	rm -rf dist && $(PYTHON) -m pip wheel -q --no-deps -w dist .
	$(PYTHON) -m pip wheel -q -w dist/wheels -c constraints.txt "dist/$(WHEEL)[pipelines]"
	grep -v '^torch' constraints.txt > dist/wheels/constraints.txt

base-image: ## a Debian bookworm + python3 base image made with debootstrap (no registry needed)
	images/docker-engine.sh
	images/base-image.sh $(BASE_IMAGE)

image-cpu: wheelhouse ## build the CPU image $(IMAGE):VERSION on BASE_IMAGE (default: make base-image's)
	images/docker-engine.sh
	@[ "$(BASE_IMAGE)" != "jestflow-base:bookworm" ] || images/base-image.sh $(BASE_IMAGE)
	$(DOCKER_BUILD) --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg FLAVOUR=cpu -t $(IMAGE):$(VERSION) .

image-cuda: wheelhouse ## build the CUDA image $(IMAGE)-cuda:VERSION on CUDA_BASE_IMAGE (CUDA PyTorch >= 2.4)
	images/docker-engine.sh
	$(DOCKER_BUILD) --build-arg BASE_IMAGE=$(CUDA_BASE_IMAGE) --build-arg FLAVOUR=cuda -t $(IMAGE)-cuda:$(VERSION) .

images: image-cpu image-cuda ## both images, tagged with the package version (what components/image.py names)

OVERLAY ?= kind
deploy: ## kubectl apply -k manifests/overlays/OVERLAY (kind | gke-gpu)
	kubectl apply -k manifests/overlays/$(OVERLAY)

# The KFP backend release matching the kfp SDK's minor (constraints.txt; a test checks).
KFP_VERSION ?= 2.17.0
kind-up: image-cpu ## create the kind cluster, install KFP $(KFP_VERSION), load images, apply the kind overlay
	kind create cluster --config manifests/kind/cluster.yaml
	kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$(KFP_VERSION)"
	kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
	kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$(KFP_VERSION)"
	@# kind has no GPUs: the training steps' CUDA tag is served by the CPU image (its torch runs on CPU).
	docker image inspect $(IMAGE)-cuda:$(VERSION) >/dev/null 2>&1 || docker tag $(IMAGE):$(VERSION) $(IMAGE)-cuda:$(VERSION)
	kind load docker-image --name jestflow $(IMAGE):$(VERSION) $(IMAGE)-cuda:$(VERSION)
	$(MAKE) deploy OVERLAY=kind
	kubectl -n kubeflow wait --for=condition=available --timeout=900s deployment/ml-pipeline

kind-run: ## port-forward the KFP API, submit the CPU pipeline on the smoke preset and follow it to its end
	kubectl -n kubeflow wait --for=condition=complete --timeout=600s job/jestflow-demo-data
	kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80 >/dev/null 2>&1 & echo $$! > $(STAMP)/port-forward.pid
	sleep 3; $(JESTFLOW) submit --cpu --watch --host http://127.0.0.1:8080 --param preset=smoke \
	  --param pushgateway_url=http://jestflow-pushgateway.kubeflow.svc:9091; rc=$$?; kill $$(cat $(STAMP)/port-forward.pid); exit $$rc

kind-down: ## delete the kind cluster
	kind delete cluster --name jestflow

bench-gpu: $(STAMP)/installed ## GPU: training MFU, scoring, selection, JEST/Flexi-JEST iteration vs uniform, data wait, each vs a plain PyTorch peer -> bench/gpu/gpu.md
	$(JESTFLOW) bench gpu --out bench/gpu

bench-select: $(STAMP)/installed ## dense vs chunked selection: time and peak memory (writes bench/select.md)
	$(JESTFLOW) bench select --out bench

clean: ## remove runs, data and caches made by these targets
	rm -rf runs data bench $(STAMP) .pytest_cache

.PHONY: help install data run lint format test-fast test compile submit wheelhouse base-image image-cpu image-cuda images deploy kind-up kind-run kind-down bench bench-extended bench-gpu bench-select clean
