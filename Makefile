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

test: $(STAMP)/installed $(STAMP)/services ## all tests (smoke preset; starts Prometheus + Pushgateway on 127.0.0.1 itself)
	$(PYTHON) -m pytest -q tests

compile: $(STAMP)/installed ## compile the pipeline into pipelines/compiled/ (the only way those files change)
	$(PYTHON) -m jestflow_pipelines.compile

KFP_HOST ?= http://localhost:8080
submit: $(STAMP)/installed ## submit the GPU pipeline to KFP_HOST (PARAMS="steps=2000 pool_uri=gs://..." EXPERIMENT=jestflow)
	jestflow submit --host $(KFP_HOST) --experiment $(or $(EXPERIMENT),jestflow) $(foreach p,$(PARAMS),--param $(p))

bench: $(STAMP)/installed ## curation benchmark: every method vs uniform, 3 seeds (bench preset, ~40 min on 2 cores) -> BENCHMARKS.md
	jestflow bench curation --preset bench --out bench/curation --benchmarks BENCHMARKS.md

bench-select: $(STAMP)/installed ## dense vs chunked selection: time and peak memory (writes bench/select.md)
	jestflow bench select --out bench

clean: ## remove runs, data and caches made by these targets
	rm -rf runs data bench $(STAMP) .pytest_cache

.PHONY: help install data run test compile submit bench bench-select clean
