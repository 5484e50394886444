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
	$(PIP) -e ".[pipelines,test,hf]"
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

bench-extended: $(STAMP)/installed ## make bench plus the LR sweep, reference strengths, a long-tail pool, selection precision, ablations, hf-siglip vs vit and a brought-in reference (each timed; reuses finished runs)
	$(JESTFLOW) bench curation --preset bench --out bench/curation --extended
	$(PYTHON) scripts/benchmarks_md.py bench/curation BENCHMARKS.md

VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' src/jestflow/__init__.py)
BASE_IMAGE ?= jestflow-base:bookworm
IMAGE ?= ghcr.io/jestflow/jestflow
WHEEL = jestflow-$(VERSION)-py3-none-any.whl
DOCKER_BUILDKIT ?= 0
# images/build.sh sends a tar of exactly what a flavour needs (the CPU build never sends the CUDA wheels),
# checks free disk first and prunes the dangling layers earlier builds left.
export DOCKER_BUILDKIT
TORCH = $(shell sed -n 's/^torch==\([^ ]*\).*/\1/p' constraints.txt)

wheelhouse: $(STAMP)/installed ## dist/: the jestflow wheel and every dependency's wheel, CPU torch (offline image builds)
	rm -rf dist/*.whl dist/wheels && $(PYTHON) -m pip wheel -q --no-deps -w dist .  # dist/wheels-cuda is kept
	$(PYTHON) -m pip wheel -q -w dist/wheels -c constraints.txt "dist/$(WHEEL)[pipelines,hf]"
	cp constraints.txt dist/wheels/constraints.txt

# The CUDA build of constraints.txt's torch and the CUDA libraries it needs, from PyPI (several GB). The
# machine's pip configuration may point at a local CPU wheel; PIP_CONFIG_FILE=/dev/null reads PyPI alone.
# `===` pins the version exactly: the CPU wheel's 2.13.0+cpu would satisfy `==` (and sort higher).
wheelhouse-cuda: wheelhouse ## dist/wheels-cuda: torch $(TORCH) built for CUDA, with its nvidia-* and triton wheels, from PyPI
	mkdir -p dist/wheels-cuda
	PIP_CONFIG_FILE=/dev/null $(PYTHON) -m pip download -q --only-binary :all: -d dist/wheels-cuda "torch===$(TORCH)"
	grep -v -e '^torch' -e '^triton' constraints.txt > dist/wheels-cuda/constraints.txt
	echo "torch===$(TORCH)" >> dist/wheels-cuda/constraints.txt

base-image: ## a Debian bookworm + python3 base image made with debootstrap (no registry needed)
	images/docker-engine.sh
	images/base-image.sh $(BASE_IMAGE)

image-cpu: wheelhouse ## build the CPU image $(IMAGE):VERSION on BASE_IMAGE (default: make base-image's)
	images/docker-engine.sh
	@[ "$(BASE_IMAGE)" != "jestflow-base:bookworm" ] || images/base-image.sh $(BASE_IMAGE)
	images/build.sh cpu $(IMAGE):$(VERSION) $(BASE_IMAGE) $(WHEEL)

image-cuda: wheelhouse-cuda ## build the CUDA image $(IMAGE)-cuda:VERSION: the same base, torch $(TORCH)'s CUDA build (5.3 GB image; not in CI)
	images/docker-engine.sh
	@[ "$(BASE_IMAGE)" != "jestflow-base:bookworm" ] || images/base-image.sh $(BASE_IMAGE)
	images/build.sh cuda $(IMAGE)-cuda:$(VERSION) $(BASE_IMAGE) $(WHEEL)

images: image-cpu image-cuda ## both images, tagged with the package version (what components/image.py names)

REGISTRY ?=
push: ## tag both images for REGISTRY (e.g. REGISTRY=us-docker.pkg.dev/PROJECT/jestflow) and push them
	@[ -n "$(REGISTRY)" ] || { echo "give REGISTRY=host/path (e.g. us-docker.pkg.dev/PROJECT/jestflow)" >&2; exit 2; }
	for i in jestflow jestflow-cuda; do docker tag $(IMAGE:/jestflow=)/$$i:$(VERSION) $(REGISTRY)/$$i:$(VERSION) && docker push $(REGISTRY)/$$i:$(VERSION); done
	@echo "submit with --param image=$(REGISTRY)/jestflow:$(VERSION) --param train_image=$(REGISTRY)/jestflow-cuda:$(VERSION)"

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
	kind load docker-image --name jestflow $(IMAGE):$(VERSION)  # the CPU variant's one image (image, train_image)
	$(MAKE) deploy OVERLAY=kind
	kubectl -n kubeflow wait --for=condition=available --timeout=900s deployment/ml-pipeline

kind-run: ## port-forward the KFP API, submit the CPU pipeline on the smoke preset and follow it to its end
	kubectl -n kubeflow wait --for=condition=complete --timeout=600s job/jestflow-demo-data
	kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80 >/dev/null 2>&1 & echo $$! > $(STAMP)/port-forward.pid
	sleep 3; $(JESTFLOW) submit --cpu --watch --host http://127.0.0.1:8080 --param preset=smoke \
	  --timeout 3600; rc=$$?; kill $$(cat $(STAMP)/port-forward.pid); exit $$rc

kind-down: ## delete the kind cluster
	kind delete cluster --name jestflow

bench-scale: $(STAMP)/installed ## the cluster data path at 100k, 300k and 1M samples on a local GCS emulator: memory, bytes read, speed per step -> BENCHMARKS.md
	$(JESTFLOW) bench scale --out bench/scale
	cp bench/scale/scale.md docs/bench-scale.md
	$(PYTHON) scripts/benchmarks_md.py bench/curation BENCHMARKS.md

bench-gpu: $(STAMP)/installed ## GPU: training MFU, scoring, selection, JEST/Flexi-JEST iteration vs uniform, data wait, each vs a plain PyTorch peer -> bench/gpu/gpu.md
	$(JESTFLOW) bench gpu --out bench/gpu

bench-select: $(STAMP)/installed ## dense vs chunked selection: time and peak memory (writes bench/select.md)
	$(JESTFLOW) bench select --out bench

clean: ## remove runs, data and caches made by these targets
	rm -rf runs data bench $(STAMP) .pytest_cache

.PHONY: help install data run lint format test-fast test compile submit wheelhouse wheelhouse-cuda base-image image-cpu image-cuda images push deploy kind-up kind-run kind-down bench bench-extended bench-scale bench-gpu bench-select clean
