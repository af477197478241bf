# Docker targets of w2s-harness; included by the top-level Makefile (`-include docker/docker.mk`).
#   make docker-build   build the trainer, MLflow and Postgres images (W2S_LOCAL_BASE=1: from a local
#                       debootstrap base, for machines without an image registry)
#   make up / down      start (healthy, --wait) / stop the MLflow + Postgres stack; data survives `down`
#   make docker-lint    hadolint + compose schema + `docker compose config -q` (no daemon needed)
#   make docker-test    pytest -m docker tests/docker (starts its own dockerd, builds, tears down)
# See docs/docker.md.
PY ?= .venv/bin/python
DOCKER_TOOLS ?= .venv-tools
W2S_LOCAL_BASE ?= 0
W2S_MLFLOW_PORT ?= 5000
W2S_DOCKER_ENV ?= /tmp/w2s-docker/env
# dockerd: start our own (Debian docker.io) unless DOCKER_HOST already points at an engine.
W2S_OWN_DOCKERD ?= $(if $(DOCKER_HOST),0,1)
# Without the NVIDIA container runtime the trainer's GPU reservation cannot be satisfied: drop it.
W2S_COMPOSE_FILES ?= -f docker-compose.yml $(if $(shell command -v nvidia-smi 2>/dev/null),,-f docker-compose.cpu.yml)
PYTEST_ARGS ?=

# Each recipe line runs in its own shell: prefix with this to get DOCKER_HOST, DOCKER_CONFIG and the tools.
DOCKER_SHELL_ENV = set -a; if [ "$(W2S_OWN_DOCKERD)" = 1 ] && [ -f $(W2S_DOCKER_ENV) ]; then . $(W2S_DOCKER_ENV); fi; \
  . $(DOCKER_TOOLS)/env; set +a;
COMPOSE = docker compose $(W2S_COMPOSE_FILES)

.PHONY: docker-tools dockerd dockerd-stop docker-build up down docker-lint docker-test docker-lock

$(DOCKER_TOOLS)/env: docker/tools.sh
	docker/tools.sh
	@touch $@

docker-tools: $(DOCKER_TOOLS)/env

dockerd:
	@if [ "$(W2S_OWN_DOCKERD)" = 1 ]; then docker/dockerd.sh start; fi

dockerd-stop:
	docker/dockerd.sh stop

docker-build: docker-tools dockerd
	$(DOCKER_SHELL_ENV) W2S_LOCAL_BASE=$(W2S_LOCAL_BASE) docker/build.sh all

up: docker-tools dockerd
	@$(DOCKER_SHELL_ENV) t0=$$(date +%s.%N); \
	W2S_MLFLOW_PORT=$(W2S_MLFLOW_PORT) $(COMPOSE) up -d --no-build --wait && \
	echo "stack healthy in $$(awk -v a=$$t0 -v b=$$(date +%s.%N) 'BEGIN{printf "%.1f", b-a}') s" && \
	echo "MLflow UI: http://127.0.0.1:$(W2S_MLFLOW_PORT)   (trainer: docker compose run --rm trainer run experiments/<manifest>.yaml)"

down: docker-tools
	$(DOCKER_SHELL_ENV) $(COMPOSE) down

docker-lint: docker-tools
	$(DOCKER_SHELL_ENV) hadolint --config docker/.hadolint.yaml docker/Dockerfile docker/mlflow.Dockerfile docker/postgres.Dockerfile
	$(DOCKER_SHELL_ENV) check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	$(DOCKER_SHELL_ENV) docker compose -f docker-compose.yml config -q
	$(DOCKER_SHELL_ENV) docker compose -f docker-compose.yml -f docker-compose.cpu.yml --profile trainer config -q
	@echo "docker-lint: OK"

docker-test: docker-tools
	$(PY) -m pytest -m docker tests/docker $(PYTEST_ARGS)

# Regenerate docker/requirements.lock and docker/mlflow-requirements.lock (hashes) after changing a pin.
docker-lock: docker-tools
	docker/lock.sh
