#!/usr/bin/env bash
# Build the three images (trainer, MLflow server, Postgres) with BuildKit, printing the wall time of each.
#
#   docker/build.sh [base|trainer|mlflow|postgres|all]...     (default: all)
#
# W2S_LOCAL_BASE=1   (CI, machines without an image registry) first builds localhost/debian-min:bookworm with
#                    debootstrap (skipped when the image exists) and builds every image FROM it, passing the
#                    host CA bundle as the BuildKit secret `ca`. Otherwise the Dockerfiles' pinned defaults
#                    (CUDA devel base, official postgres) are used.
# Environment (all optional):
#   W2S_TRAINER_IMAGE / W2S_MLFLOW_IMAGE / W2S_POSTGRES_IMAGE   image tags (same variables as docker-compose.yml)
#   TORCH_VARIANT=cpu|cuda   default: cpu with W2S_LOCAL_BASE=1, else cuda
#   TORCH_VERSION            default 2.13.0
#   W2S_TORCH_WHEEL          the local CPU torch wheel copied into docker/wheels/ for TORCH_VARIANT=cpu
#   W2S_CA_BUNDLE            a PEM bundle passed as the `ca` secret (corporate TLS-inspecting proxies);
#                            default with W2S_LOCAL_BASE=1: /etc/ssl/certs/ca-certificates.crt
#   W2S_BUILD_CONTEXT        the trainer's build context (default: the repo root; needs pyproject.toml + harness/)
#   W2S_BUILD_ARGS           extra arguments for every `docker build` (e.g. --no-cache, --progress=plain)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LOCAL_BASE=${W2S_LOCAL_BASE:-0}
BASE_TAG=${W2S_BASE_IMAGE:-localhost/debian-min:bookworm}
TRAINER_IMAGE=${W2S_TRAINER_IMAGE:-localhost/w2s-harness:dev}
MLFLOW_IMAGE=${W2S_MLFLOW_IMAGE:-localhost/w2s-mlflow:3.17.2}
POSTGRES_IMAGE=${W2S_POSTGRES_IMAGE:-localhost/w2s-postgres:15}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
if [ "$LOCAL_BASE" = 1 ]; then TORCH_VARIANT=${TORCH_VARIANT:-cpu}; else TORCH_VARIANT=${TORCH_VARIANT:-cuda}; fi
TORCH_WHEEL=${W2S_TORCH_WHEEL:-/opt/wheels/torch-${TORCH_VERSION}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl}
CONTEXT=${W2S_BUILD_CONTEXT:-$ROOT}

# The engine started by docker/dockerd.sh, unless DOCKER_HOST already points somewhere.
ENVFILE=${W2S_DOCKER_STATE:-/tmp/w2s-docker}/env
if [ -z "${DOCKER_HOST:-}" ] && [ -f "$ENVFILE" ]; then . "$ENVFILE"; fi
# BuildKit needs a client that has it built in: Debian's /usr/bin/docker 20.10 here (a 28.x client without
# the buildx plugin refuses DOCKER_BUILDKIT=1). Elsewhere any `docker` with buildx works.
if [ -z "${W2S_DOCKER_CLIENT:-}" ]; then
  if [ -x /usr/bin/docker ]; then W2S_DOCKER_CLIENT=/usr/bin/docker; else W2S_DOCKER_CLIENT=docker; fi
fi
DOCKER=$W2S_DOCKER_CLIENT
export DOCKER_BUILDKIT=1

SECRET=()
CA=${W2S_CA_BUNDLE:-}
if [ -z "$CA" ] && [ "$LOCAL_BASE" = 1 ]; then CA=/etc/ssl/certs/ca-certificates.crt; fi
if [ -n "$CA" ]; then SECRET=(--secret "id=ca,src=$CA"); fi
read -r -a EXTRA <<< "${W2S_BUILD_ARGS:-}"

log() { printf '[build.sh] %s\n' "$*" >&2; }
timed() {  # timed NAME CMD...: run, print and record the wall time
  local name=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  local dt
  dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
  log "$name: ${dt} s"
  echo "$name $dt" >> "${W2S_TIMINGS_FILE:-/dev/null}"
}

build_base() {
  if "$DOCKER" image inspect "$BASE_TAG" >/dev/null 2>&1; then
    log "base $BASE_TAG exists; skipping debootstrap"
    return 0
  fi
  command -v debootstrap >/dev/null || { log "debootstrap missing (docker/dockerd.sh start installs it)"; exit 1; }
  # Never hard-code a mirror: use the one this machine's apt is configured with.
  local mirror tmp
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  if [ -z "$mirror" ]; then
    mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  fi
  [ -n "$mirror" ] || { log "no Debian mirror configured in /etc/apt"; exit 1; }
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" RETURN
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
    bookworm "$tmp/rootfs" "$mirror" > "$tmp/debootstrap.log" 2>&1 || { tail -n 30 "$tmp/debootstrap.log" >&2; exit 1; }
  rm -rf "$tmp/rootfs/var/cache/apt/archives/"*.deb "$tmp/rootfs/var/lib/apt/lists/"*
  tar -C "$tmp/rootfs" -c . | "$DOCKER" import - "$BASE_TAG" >/dev/null
}

base_args() {  # --build-arg BASE_IMAGE=... only for local-base builds; the Dockerfiles pin the real ones
  if [ "$LOCAL_BASE" = 1 ]; then
    printf '%s\n' --build-arg "BASE_IMAGE=$BASE_TAG"
  fi
}

build_trainer() {
  mkdir -p "$HERE/wheels"
  if [ "$TORCH_VARIANT" = cpu ]; then
    [ -f "$TORCH_WHEEL" ] || { log "TORCH_VARIANT=cpu needs the CPU wheel at W2S_TORCH_WHEEL ($TORCH_WHEEL)"; exit 1; }
    local dst
    dst="$HERE/wheels/$(basename "$TORCH_WHEEL")"
    if ! cmp -s "$TORCH_WHEEL" "$dst"; then cp -f "$TORCH_WHEEL" "$dst"; fi
  fi
  [ -f "$CONTEXT/pyproject.toml" ] || { log "no pyproject.toml in the build context $CONTEXT"; exit 1; }
  # With another context (W2S_BUILD_CONTEXT) the docker/ files still come from this checkout.
  if [ "$CONTEXT" != "$ROOT" ]; then
    mkdir -p "$CONTEXT/docker"
    cp -f "$HERE/requirements.lock" "$CONTEXT/docker/"
    rm -rf "$CONTEXT/docker/wheels"; mkdir -p "$CONTEXT/docker/wheels"
    if [ "$TORCH_VARIANT" = cpu ]; then ln -f "$HERE/wheels/$(basename "$TORCH_WHEEL")" "$CONTEXT/docker/wheels/" 2>/dev/null \
      || cp -f "$HERE/wheels/$(basename "$TORCH_WHEEL")" "$CONTEXT/docker/wheels/"; fi
  fi
  local args
  mapfile -t args < <(base_args)
  if [ "$LOCAL_BASE" = 1 ]; then args+=(--build-arg "PY_APT_PACKAGES="); fi
  "$DOCKER" build "${SECRET[@]}" "${args[@]}" "${EXTRA[@]}" \
    --build-arg "TORCH_VARIANT=$TORCH_VARIANT" --build-arg "TORCH_VERSION=$TORCH_VERSION" \
    -f "$HERE/Dockerfile" -t "$TRAINER_IMAGE" "$CONTEXT"
}

build_mlflow() {
  local args
  mapfile -t args < <(base_args)
  "$DOCKER" build "${SECRET[@]}" "${args[@]}" "${EXTRA[@]}" \
    -f "$HERE/mlflow.Dockerfile" -t "$MLFLOW_IMAGE" "$HERE"
}

build_postgres() {
  local args
  mapfile -t args < <(base_args)
  "$DOCKER" build "${SECRET[@]}" "${args[@]}" "${EXTRA[@]}" \
    -f "$HERE/postgres.Dockerfile" -t "$POSTGRES_IMAGE" "$HERE"
}

# Run several image builds at once (BuildKit builds them concurrently; pip installs are mostly single-core
# and network-bound, so this roughly halves the wall time on 2 cores). Logs go to files, shown on failure.
run_parallel() {  # run_parallel TARGET...
  local logdir pids=() t rc=0
  logdir=$(mktemp -d)
  for t in "$@"; do
    ( one "$t" ) > "$logdir/$t.log" 2>&1 &
    pids+=("$!")
  done
  local i=0
  for t in "$@"; do
    if wait "${pids[$i]}"; then
      grep '^\[build.sh\]' "$logdir/$t.log" >&2 || true
    else
      rc=1
      log "$t FAILED; last lines of its log:"
      tail -n 40 "$logdir/$t.log" >&2
    fi
    i=$((i + 1))
  done
  rm -rf "$logdir"
  return "$rc"
}

one() {
  case "$1" in
    base) timed "build base ($BASE_TAG)" build_base ;;
    trainer) timed "build trainer ($TRAINER_IMAGE, torch $TORCH_VARIANT)" build_trainer ;;
    mlflow) timed "build mlflow ($MLFLOW_IMAGE)" build_mlflow ;;
    postgres) timed "build postgres ($POSTGRES_IMAGE)" build_postgres ;;
    *) echo "usage: $0 [base|trainer|mlflow|postgres|all]..." >&2; exit 2 ;;
  esac
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(all)
expanded=()
for t in "${targets[@]}"; do
  if [ "$t" = all ]; then expanded+=(postgres mlflow trainer); else expanded+=("$t"); fi
done
# The base comes first (everything is built FROM it), then the images.
images=()
if [[ " ${targets[*]} " == *" all "* ]] && [ "$LOCAL_BASE" = 1 ]; then one base; fi
for t in "${expanded[@]}"; do
  if [ "$t" = base ]; then one base; else images+=("$t"); fi
done
t_all0=$(date +%s.%N)
if [ "${W2S_BUILD_PARALLEL:-1}" = 1 ] && [ ${#images[@]} -gt 1 ]; then
  run_parallel "${images[@]}"
else
  for t in "${images[@]}"; do one "$t"; done
fi
if [ ${#images[@]} -gt 1 ]; then
  dt=$(awk -v a="$t_all0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  log "all image builds (${images[*]}): ${dt} s"
  echo "build all images (${images[*]}) $dt" >> "${W2S_TIMINGS_FILE:-/dev/null}"
fi
