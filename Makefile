# jestflow — `make run` runs the whole pipeline on the embedded demo data; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
PIP := $(PYTHON) -m pip install --quiet --disable-pip-version-check -c constraints.txt
PRESET ?= demo
OUT ?= runs/$(PRESET)
DATA ?= data/$(PRESET)
STAMP := .make

.DEFAULT_GOAL := help

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: PRESET=$(PRESET) OUT=$(OUT) DATA=$(DATA) PYTHON=$(PYTHON)"

$(STAMP)/installed: pyproject.toml constraints.txt
	@mkdir -p $(STAMP)
	$(PIP) -e ".[pipelines,test]"
	@touch $@

install: $(STAMP)/installed ## install jestflow and its dependencies (CPU torch) into $(PYTHON)

data: $(STAMP)/installed ## write the demo dataset for PRESET into DATA (skipped when present)
	jestflow data demo --preset $(PRESET) --out $(DATA)

run: $(STAMP)/installed ## the whole pipeline (reference -> score -> JEST & uniform -> evaluate -> report) on demo data
	jestflow run --preset $(PRESET) --data $(DATA) --out $(OUT)

$(STAMP)/services:
	@mkdir -p $(STAMP)
	@command -v prometheus >/dev/null && command -v prometheus-pushgateway >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus prometheus-pushgateway; }
	@touch $@

$(STAMP)/npm: tests/manifests/package.json
	@mkdir -p $(STAMP)
	cd tests/manifests && npm install --silent --no-audit --no-fund
	@touch $@

test: $(STAMP)/installed $(STAMP)/services $(STAMP)/npm ## all tests (smoke preset; starts Prometheus + Pushgateway on 127.0.0.1 itself)
	$(PYTHON) -m pytest -q tests

compile: $(STAMP)/installed ## compile the pipeline into pipelines/compiled/ (the only way those files change)
	$(PYTHON) -m jestflow_pipelines.compile

KFP_HOST ?= http://localhost:8080
submit: $(STAMP)/installed ## submit the GPU pipeline to KFP_HOST (PARAMS="steps=2000 pool_uri=gs://..." EXPERIMENT=jestflow)
	jestflow submit --host $(KFP_HOST) --experiment $(or $(EXPERIMENT),jestflow) $(foreach p,$(PARAMS),--param $(p))

bench: $(STAMP)/installed ## curation benchmark: every method vs uniform, 3 seeds (bench preset, ~40 min on 2 cores) -> BENCHMARKS.md
	jestflow bench curation --preset bench --out bench/curation --benchmarks BENCHMARKS.md

VERSION = $(shell $(PYTHON) -c "import re; print(re.search(r'__version__ = \"(.+)\"', open('src/jestflow/__init__.py').read()).group(1))")
BASE_IMAGE ?= python:3.11-slim
CUDA_BASE_IMAGE ?= pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
IMAGE ?= ghcr.io/jestflow/jestflow
images: ## build the CPU and CUDA images from the wheel, tagged with the package version (needs docker)
	rm -rf dist && $(PYTHON) -m pip wheel --no-deps -w dist . -q
	docker build -f images/Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	  --build-arg JESTFLOW_WHEEL=jestflow-$(VERSION)-py3-none-any.whl -t $(IMAGE):$(VERSION) .
	docker build -f images/Dockerfile --build-arg BASE_IMAGE=$(CUDA_BASE_IMAGE) --build-arg TORCH_SPEC= \
	  --build-arg JESTFLOW_WHEEL=jestflow-$(VERSION)-py3-none-any.whl -t $(IMAGE)-cuda:$(VERSION) .

OVERLAY ?= kind
deploy: ## kubectl apply -k manifests/overlays/OVERLAY (kind | gke-gpu)
	kubectl apply -k manifests/overlays/$(OVERLAY)

KFP_VERSION ?= 2.4.0
kind-up: ## create the kind cluster, install KFP $(KFP_VERSION), load images, apply the kind overlay
	kind create cluster --config manifests/kind/cluster.yaml
	kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$(KFP_VERSION)"
	kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
	kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$(KFP_VERSION)"
	kind load docker-image --name jestflow $(IMAGE):$(VERSION)
	$(MAKE) deploy OVERLAY=kind
	kubectl -n kubeflow wait --for=condition=available --timeout=900s deployment/ml-pipeline

kind-run: ## port-forward the KFP API and submit the CPU pipeline on the smoke preset
	kubectl -n kubeflow wait --for=condition=complete --timeout=600s job/jestflow-demo-data
	kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80 >/dev/null 2>&1 & echo $$! > $(STAMP)/port-forward.pid
	sleep 3; jestflow submit --cpu --host http://127.0.0.1:8080 --param preset=smoke \
	  --param pushgateway_url=http://jestflow-pushgateway.kubeflow.svc:9091; kill $$(cat $(STAMP)/port-forward.pid)

kind-down: ## delete the kind cluster
	kind delete cluster --name jestflow

bench-select: $(STAMP)/installed ## dense vs chunked selection: time and peak memory (writes bench/select.md)
	jestflow bench select --out bench

clean: ## remove runs, data and caches made by these targets
	rm -rf runs data bench $(STAMP) .pytest_cache

.PHONY: help install data run test compile submit images deploy kind-up kind-run kind-down bench bench-select clean
