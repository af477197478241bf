# Benchmarks. Included from the top-level Makefile (`include bench/bench.mk`); uses its PY.
# gpu-check: on a lent GPU machine (one call; see docs/performance.md), after `make fetch-wheels`
# here and with .whl carried. gpu-check-tiny: the same script on CPU (tiny models, fp32, gloo).
PY ?= .venv/bin/python
GPU_PY ?= python3
GPU_SITE ?= /tmp/site
GPU_CHECK_ARGS ?=

.PHONY: fetch-wheels gpu-check gpu-check-tiny

fetch-wheels:
	bash bench/fetch_wheels.sh

gpu-check:
	@if ! $(GPU_PY) -c "import deepspeed" 2>/dev/null; then \
	  $(GPU_PY) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $(GPU_SITE) .whl/*.whl; fi
	PYTHONPATH=$(GPU_SITE):$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1 \
	  $(GPU_PY) bench/gpu_check.py --out $${OUT:-.}/gpu_check.json $(GPU_CHECK_ARGS)

gpu-check-tiny:
	OMP_NUM_THREADS=1 $(PY) bench/gpu_check.py --tiny $(GPU_CHECK_ARGS)
