# Every target delegates to one tool; `make` alone lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

WEIGHTS ?= imagenet
MODEL_NAME ?= xception
MODEL_BASE_PATH ?= models/$(MODEL_NAME)
GRPC_PORT ?= 8500
REST_PORT ?= 8501
GATEWAY_PORT ?= 8080
IMAGE ?= samples/cat.jpg
INPUT ?= samples/*.jpg
OUTPUT ?= out/bulk/$(shell date +%Y%m%d-%H%M%S)
PYTEST_ARGS ?=

# The TF Serving release the launcher pins; `make check-tfserving` checks exports under its TensorFlow.
TFS_VERSION = $(shell $(BIN)/python -c 'from xception_serving.launch_tfserving import TFS_VERSION; print(TFS_VERSION)')

.PHONY: help install dist export check-tfserving serve serve-tfserving run bulk test test-unit lint bench tune-batching k8s kserve gateway clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}' \
	  | sed -e 's|$$(MODEL_BASE_PATH)|$(MODEL_BASE_PATH)|g' -e 's|$$(IMAGE)|$(IMAGE)|g' \
	        -e 's|$$(GRPC_PORT)|$(GRPC_PORT)|g' -e 's|$$(REST_PORT)|$(REST_PORT)|g' \
	        -e 's|$$(GATEWAY_PORT)|$(GATEWAY_PORT)|g' -e 's|$$(INPUT)|$(INPUT)|g' -e 's|$$(OUTPUT)|$(OUTPUT)|g'
	@echo "  variables: WEIGHTS=imagenet|random|PATH.h5  MODEL_BASE_PATH=$(MODEL_BASE_PATH)  IMAGE=$(IMAGE)"

install: $(STAMP) ## create .venv/ with every part (the `all` extra) and the test tools, checked by pip check

# One environment for every part, Beam included: its protobuf<7 and pillow<13 caps resolve with the
# rest, and `pip check` proves it on every install (a later single-package install can move them).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25.1'
	$(BIN)/python -m pip install --quiet -e '.[all]' --group dev
	$(BIN)/python -m pip check
	touch $(STAMP)

dist: $(STAMP) ## build the wheel into dist/ (`pip install dist/*.whl` installs the client alone)
	rm -rf dist
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist .
	@ls dist

export: $(STAMP) ## export Xception to $(MODEL_BASE_PATH)/<next version> (WEIGHTS=random offline)
	$(BIN)/xception-export --weights $(WEIGHTS) --model-base-path $(MODEL_BASE_PATH)

check-tfserving: $(STAMP) ## load the latest version as the pinned TF Serving would (its TensorFlow, Session, warmup)
	$(BIN)/xception-export check $(MODEL_BASE_PATH) --tfserving-version $(TFS_VERSION)

serve: $(STAMP) ## serve $(MODEL_BASE_PATH) locally on gRPC $(GRPC_PORT) / REST $(REST_PORT) (foreground)
	$(BIN)/xception-serve --model_name=$(MODEL_NAME) --model_base_path=$(abspath $(MODEL_BASE_PATH)) \
	  --port=$(GRPC_PORT) --rest_api_port=$(REST_PORT) \
	  --enable_batching --batching_parameters_file=serving/batching-cpu.config \
	  --monitoring_config_file=serving/monitoring.config

serve-tfserving: ## serve with real TF Serving on the GPU (Docker image or tensorflow_model_server)
	serving/run-tfserving.sh --model-base-path=$(MODEL_BASE_PATH) --port=$(GRPC_PORT) \
	  --rest-api-port=$(REST_PORT)

run: $(STAMP) ## export if needed, serve locally, classify $(IMAGE), stop (offline: WEIGHTS=random)
	$(BIN)/python -m demo.run --weights $(WEIGHTS) --model-base-path $(MODEL_BASE_PATH) \
	  --model-name $(MODEL_NAME) --image $(IMAGE)

# Uses the served version of $(MODEL_BASE_PATH); with none, exports one with WEIGHTS. Without
# WEIGHTS given and with no way to fetch ImageNet's (offline), it exports random weights instead and
# says so: the pipeline runs, the answers are untrained.
bulk: $(STAMP) ## classify every file matching INPUT='$(INPUT)' in-process on Apache Beam into OUTPUT=$(OUTPUT)
	@$(BIN)/python -c 'import sys; from xception_contract import layout; \
	  sys.exit(0 if layout.latest_saved_model_dir(sys.argv[1]) else 1)' $(MODEL_BASE_PATH) \
	  || $(BIN)/xception-export --weights $(WEIGHTS) --model-base-path $(MODEL_BASE_PATH) \
	  $(if $(filter file,$(origin WEIGHTS)),|| { echo "bulk: WARNING: no ImageNet weights (offline?); exporting --weights random: its answers are untrained" >&2; \
	     $(BIN)/xception-export --weights random --model-base-path $(MODEL_BASE_PATH); })
	$(BIN)/xception-bulk --input '$(INPUT)' --output $(OUTPUT) --model $(MODEL_BASE_PATH) $(BULK_ARGS)

test: $(STAMP) ## run the whole test suite (unit, integration, end-to-end, compat)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP) ## run only the fast unit tier
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check and format, mypy --strict, the import contracts ([tool.importlinter])
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP) ## benchmark limit vs served vs the usual way (TFS_TARGET=host:port to measure TF Serving)
	$(BIN)/python -m benchmarks.run $(if $(TFS_TARGET),--tfserving-target $(TFS_TARGET)) \
	  $(if $(TFS_REST_URL),--tfserving-rest-url $(TFS_REST_URL)) $(BENCH_ARGS)

tune-batching: $(STAMP) ## measure batch sizes here (or TFS_TARGET=host:port) and write a batching.config for a latency goal
	$(BIN)/python -m benchmarks.tune_batching $(if $(TFS_TARGET),--target $(TFS_TARGET)) $(TUNE_ARGS)

k8s: ## render the Kubernetes manifests (gpu and cpu overlays, the post-rollout verify Job) to build/k8s/
	mkdir -p build/k8s
	kubectl kustomize serving/k8s/overlays/gpu > build/k8s/gpu.yaml
	kubectl kustomize serving/k8s/overlays/cpu > build/k8s/cpu.yaml
	kubectl kustomize serving/k8s/overlays/verify > build/k8s/verify.yaml
	@echo "rendered build/k8s/gpu.yaml, build/k8s/cpu.yaml and build/k8s/verify.yaml"

kserve: ## render the KServe ServingRuntime + InferenceService (gpu and cpu overlays) to build/kserve/
	mkdir -p build/kserve
	kubectl kustomize serving/kserve/overlays/gpu > build/kserve/gpu.yaml
	kubectl kustomize serving/kserve/overlays/cpu > build/kserve/cpu.yaml
	@echo "rendered build/kserve/gpu.yaml and build/kserve/cpu.yaml"

gateway: $(STAMP) ## HTTP gateway (examples/gateway) on 127.0.0.1:$(GATEWAY_PORT) in front of `make serve`
	XCEPTION_SERVER=127.0.0.1:$(GRPC_PORT) XCEPTION_MODEL=$(MODEL_NAME) \
	  $(BIN)/python -m xception_gateway --port $(GATEWAY_PORT)

clean: ## remove build output and exported models (keeps .venv)
	rm -rf build models .pytest_cache .ruff_cache .mypy_cache
