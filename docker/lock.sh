#!/usr/bin/env bash
# Regenerate the hashed lock files of the images with pip-tools (from the tools venv, docker/tools.sh).
#   docker/lock.sh
# The locks target CPython 3.11 on linux x86_64 (the Python of the images); run it with a 3.11 tools venv.
# torch is excluded from requirements.lock (see requirements.in); it is resolved against the local CPU wheel
# (pip's find-links on dev machines) so that resolving never downloads a multi-GB CUDA build.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
V=${W2S_TOOLS_VENV:-$ROOT/.venv-tools}
[ -x "$V/bin/pip-compile" ] || "$HERE/tools.sh"
cd "$HERE"
common=(--quiet --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links
        --no-emit-trusted-host --no-emit-options --annotation-style=line --resolver=backtracking)
CUSTOM_COMPILE_COMMAND="docker/lock.sh" "$V/bin/pip-compile" "${common[@]}" \
  --unsafe-package torch --output-file requirements.lock requirements.in
CUSTOM_COMPILE_COMMAND="docker/lock.sh" "$V/bin/pip-compile" "${common[@]}" --allow-unsafe \
  --output-file mlflow-requirements.lock mlflow-requirements.in
grep -c -- '--hash=' requirements.lock mlflow-requirements.lock
