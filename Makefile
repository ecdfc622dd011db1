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
	$(BIN)/pip install -q -e '.[tracker,masks,train,cluster,viewer,dev]'
	$(BIN)/pip check
	@# Chromium for the viewer's browser test: Debian's package, where apt exists and we are root (else the test skips)
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && ! command -v chromium >/dev/null; then \
	  { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null; }; } || echo "make setup: chromium not installed; the viewer browser test will skip"; fi

test: ## run the test suite (CPU, offline; GPU and slow tests are skipped)
	$(BIN)/python -m pytest -q -m 'not slow and not images' tests

test-slow: ## the long tests too
	$(BIN)/python -m pytest -q -m 'not images' tests

test-gpu: ## only the GPU tests (on a machine with CUDA)
	$(BIN)/python -m pytest -q -m gpu tests

# FLAME route (run and submit): FLAME=generic_model.pkl EMBEDDING=mediapipe_landmark_embedding.npz
# [FLAME_MASKS=FLAME_masks.pkl] [FLAME_TEXTURE=FLAME_texture.npz]
FACE_ARGS = $(if $(FLAME),--flame $(FLAME)) $(if $(EMBEDDING),--mediapipe-embedding $(EMBEDDING)) \
	$(if $(FLAME_MASKS),--flame-masks $(FLAME_MASKS)) $(if $(FLAME_TEXTURE),--flame-texture $(FLAME_TEXTURE))
run: ## run the pipeline locally: make run ACTOR=roman VIDEO=video.mp4 [FLAME=generic_model.pkl EMBEDDING=mediapipe_landmark_embedding.npz [FLAME_MASKS=..] [FLAME_TEXTURE=..]] [DEVICE=cuda] [PRESET=tiny]
	$(BIN)/avatar run --actor $(ACTOR) --store $(STORE) $(if $(VIDEO),--video $(VIDEO)) $(FACE_ARGS) $(if $(DEVICE),--device $(DEVICE)) $(if $(PRESET),--preset $(PRESET))

demo: ## the whole pipeline with no licensed file (tiny on CPU, full size on a GPU)
	$(BIN)/avatar demo --store $(STORE)

FRAMES ?= 10000
bench: ## every stage's throughput and the end-to-end time on a synthetic clip; records docs/benchmarks.*
	$(BIN)/avatar bench --frames $(FRAMES) --record

# -- container images and the Helm chart (images/, charts/) ------------------------------------------
CHART_DIR := charts/avatar-pipeline
.PHONY: images lock chart test-images

images: ## build and push the three images: make images REGISTRY=ghcr.io/me/avatar TAG=v1 [TORCH_FLAVOR=cpu] [BUILDER=podman]
	REGISTRY=$(REGISTRY) TAG=$(TAG) images/build.sh --push

lock: ## regenerate images/*/requirements*.lock from pyproject.toml (needs uv: pip install uv)
	$(BIN)/python images/lock.py

chart: ## regenerate the chart's WorkflowTemplate files (main and drive) and lint the chart with Helm's library
	env -u AVATAR_WORKFLOW_SETTINGS -u AVATAR_IMAGE_REGISTRY -u AVATAR_IMAGE_TAG -u ARGO_NAMESPACE \
	  -u AVATAR_WORKFLOW_S3_ENDPOINT -u AVATAR_WORKFLOW_S3_BUCKET \
	  $(BIN)/avatar workflow render --for-helm --out $(CHART_DIR)/files/workflowtemplate.yaml
	env -u AVATAR_WORKFLOW_SETTINGS -u AVATAR_IMAGE_REGISTRY -u AVATAR_IMAGE_TAG -u ARGO_NAMESPACE \
	  -u AVATAR_WORKFLOW_S3_ENDPOINT -u AVATAR_WORKFLOW_S3_BUCKET \
	  $(BIN)/avatar workflow render --for-helm --pipeline drive --out $(CHART_DIR)/files/drive-workflowtemplate.yaml
	$(BIN)/python -c "import helm_python as h, json, sys; r = h.lint('$(CHART_DIR)', None, strict=True); print(json.dumps(r, indent=1)); sys.exit(1 if r['errors'] or any(m['severity'] >= 2 for m in r['messages']) else 0)"

test-images: ## smoke-build every image with buildah (CPU torch, local Debian base) and check inside; slow
	$(BIN)/python -m pytest -q -m images -p no:cacheprovider tests/images

# -- the pipeline on a Kubernetes cluster with Argo Workflows (workflows/, docs/cluster.md) ---------
.PHONY: workflow submit retry status drive
SETTINGS ?=
workflow: ## write the WorkflowTemplate: make workflow [REGISTRY=...] [TAG=...] [SETTINGS=cluster.yaml] [OUT=wt.yaml] [PIPELINE=drive]
	$(BIN)/avatar workflow render --registry $(REGISTRY) --tag $(TAG) $(if $(SETTINGS),--settings $(SETTINGS)) $(if $(OUT),--out $(OUT)) $(if $(PIPELINE),--pipeline $(PIPELINE))

drive: ## drive an avatar on the cluster: make drive ACTOR=roman DRIVER=driver.mp4 | MOTION=motion.npz [AUDIO=speech.wav] [NAME=...]
	@test -n "$(ACTOR)" -a -n "$(DRIVER)$(MOTION)" || { echo "make drive: give ACTOR= and DRIVER=video or MOTION=file" >&2; exit 2; }
	$(BIN)/avatar submit-drive --actor $(ACTOR) $(if $(DRIVER),--video $(DRIVER)) $(if $(MOTION),--motion $(MOTION)) $(if $(AUDIO),--audio $(AUDIO)) $(if $(NAME),--name $(NAME)) $(if $(SETTINGS),--settings $(SETTINGS))

submit: ## run on the cluster: make submit ACTOR=roman [VIDEO=video.mp4] [FLAME=.. EMBEDDING=.. [FLAME_MASKS=..] [FLAME_TEXTURE=..]] (needs ARGO_SERVER, ARGO_TOKEN)
	$(BIN)/avatar submit --actor $(ACTOR) $(if $(VIDEO),--video $(VIDEO)) $(FACE_ARGS) $(if $(PRESET),--preset $(PRESET)) $(if $(SETTINGS),--settings $(SETTINGS))

WORKFLOW ?= $(WF)
retry: ## retry a failed workflow's failed pods: make retry WORKFLOW=avatar-pipeline-roman-abc12
	@test -n "$(WORKFLOW)" || { echo "make retry: give WORKFLOW=<name> (avatar submit printed it)" >&2; exit 2; }
	$(BIN)/avatar retry $(WORKFLOW) $(if $(SETTINGS),--settings $(SETTINGS))

status: ## per-stage phase and progress of a workflow: make status WORKFLOW=avatar-pipeline-roman-abc12
	@test -n "$(WORKFLOW)" || { echo "make status: give WORKFLOW=<name> (avatar submit printed it)" >&2; exit 2; }
	$(BIN)/avatar status $(WORKFLOW) $(if $(SETTINGS),--settings $(SETTINGS))
