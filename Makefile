# avatar-pipeline: every entry point a user or CI needs.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STORE ?= ./avatar-store
ACTOR ?= demo
REGISTRY ?= localhost/avatar-pipeline
TAG ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo dev)

.PHONY: setup test test-slow test-gpu run demo bench help

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: ## create .venv with everything needed to run and test (CPU torch)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[tracker,masks,train,cluster,dev]'
	$(BIN)/pip check

test: ## run the test suite (CPU, offline; GPU and slow tests are skipped)
	$(BIN)/python -m pytest -q -m 'not slow and not images' tests

test-slow: ## the long tests too
	$(BIN)/python -m pytest -q -m 'not images' tests

test-gpu: ## only the GPU tests (on a machine with CUDA)
	$(BIN)/python -m pytest -q -m gpu tests

run: ## run the pipeline locally: make run ACTOR=roman VIDEO=video.mp4 [FLAME=generic_model.pkl]
	$(BIN)/avatar run --actor $(ACTOR) --store $(STORE) $(if $(VIDEO),--video $(VIDEO)) $(if $(FLAME),--flame $(FLAME))

demo: ## the whole pipeline with no licensed file (tiny on CPU, full size on a GPU)
	$(BIN)/avatar demo --store $(STORE)

FRAMES ?= 10000
bench: ## every stage's throughput and the end-to-end time on a synthetic clip; records docs/benchmarks.*
	$(BIN)/avatar bench --frames $(FRAMES) --record
