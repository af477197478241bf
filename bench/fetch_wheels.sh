#!/usr/bin/env bash
# Wheels that bench/gpu_check.py needs on a lent GPU machine (no network there; ENVIRONMENT.md §9):
# what its image lacks (deepspeed, hjson, pydantic and its three helpers), at the versions of this
# venv, for CPython 3.12 manylinux x86_64. msgpack, ninja, py-cpuinfo, einops and typing-extensions
# are in that image already (KINDS.md); pass EXTRA="msgpack==1.2.4 ..." to carry them anyway.
# DeepSpeed ships only an sdist: it is built here into its pure-python wheel (no ops; they JIT there).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT_DIR:-.whl}
mkdir -p "$OUT"
grep -qxF "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude   # never committed
ver() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
PKGS="hjson==$(ver hjson) pydantic==$(ver pydantic) pydantic-core==$(ver pydantic-core) \
annotated-types==$(ver annotated-types) typing-inspection==$(ver typing-inspection) ${EXTRA:-}"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$OUT" $PKGS
ls "$OUT"/deepspeed-*.whl >/dev/null 2>&1 || \
  DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" "deepspeed==$(ver deepspeed)"
ls -la "$OUT"
du -sh "$OUT"
