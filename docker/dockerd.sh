#!/usr/bin/env bash
# Start/stop a private Docker engine (Debian's docker.io) for builds, compose and the docker tests.
#
#   docker/dockerd.sh start   # install docker.io + debootstrap if missing, start dockerd, wait for the API
#   docker/dockerd.sh stop    # stop it and remove the state dir (images in the data root are kept)
#   docker/dockerd.sh purge   # stop and also delete the data root (all images, volumes, build cache)
#   docker/dockerd.sh env     # print the env file path; use: . "$(docker/dockerd.sh env)"
#   docker/dockerd.sh status  # exit 0 when the engine answers
#
# No systemd on CI machines: nothing starts by itself. The socket path must stay under ~100 bytes, so the
# state dir is short (/tmp/w2s-docker). The data root (images, build cache) lives apart from it so that a
# stop/start keeps the debootstrap base image and BuildKit cache. Start is idempotent.
set -euo pipefail

STATE_DIR=${W2S_DOCKER_STATE:-/tmp/w2s-docker}
DATA_ROOT=${W2S_DOCKER_DATA:-/var/tmp/w2s-docker-data}
SOCK="$STATE_DIR/docker.sock"
PIDFILE="$STATE_DIR/dockerd.pid"
ENVFILE="$STATE_DIR/env"
LOG="$STATE_DIR/dockerd.log"
# Debian's client (20.10): it is the one that can build with BuildKit (docs/docker.md).
CLIENT=/usr/bin/docker

log() { printf '[dockerd.sh] %s\n' "$*" >&2; }

api_up() { [ -S "$SOCK" ] && DOCKER_HOST="unix://$SOCK" "$CLIENT" version >/dev/null 2>&1; }

ensure_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 && [ -x "$CLIENT" ] || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} (apt)"
    local t0=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    log "apt install took $((SECONDS - t0)) s"
  fi
}

write_env() {
  cat > "$ENVFILE" <<ENV
# written by docker/dockerd.sh; source it: . $ENVFILE
export DOCKER_HOST=unix://$SOCK
export W2S_DOCKER_CLIENT=$CLIENT
ENV
}

start() {
  if [ "$(id -u)" != 0 ]; then log "must run as root"; exit 1; fi
  if api_up; then
    write_env
    log "already running ($SOCK)"
    return 0
  fi
  ensure_packages
  mkdir -p "$STATE_DIR" "$DATA_ROOT"
  if [ ${#SOCK} -ge 100 ]; then log "socket path too long (${#SOCK} bytes): $SOCK"; exit 1; fi
  # A stale pid file from a crashed engine would make dockerd refuse to start.
  if [ -f "$PIDFILE" ] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then rm -f "$PIDFILE"; fi
  rm -f "$SOCK"
  local t0=$SECONDS
  # setsid: the engine must outlive the shell (and pytest) that started it.
  setsid dockerd --data-root "$DATA_ROOT" --exec-root "$STATE_DIR/exec" -H "unix://$SOCK" \
    --pidfile "$PIDFILE" >"$LOG" 2>&1 < /dev/null &
  for _ in $(seq 120); do
    if api_up; then
      write_env
      log "dockerd up in $((SECONDS - t0)) s; DOCKER_HOST=unix://$SOCK (env file: $ENVFILE)"
      return 0
    fi
    sleep 0.5
  done
  log "dockerd did not answer within 60 s; last log lines:"
  tail -n 30 "$LOG" >&2 || true
  exit 1
}

stop() {
  if [ -f "$PIDFILE" ]; then
    local pid
    pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      if kill -0 "$pid" 2>/dev/null; then log "dockerd $pid still alive after 30 s; sending KILL"; kill -9 "$pid" || true; fi
      log "dockerd $pid stopped"
    fi
  else
    log "not running (no $PIDFILE)"
  fi
  # exec-root may hold mounts of containers that were still running
  if [ -d "$STATE_DIR/exec" ]; then
    grep -o " $STATE_DIR/exec[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  fi
  rm -rf "$STATE_DIR"
}

purge() {
  stop
  if [ -d "$DATA_ROOT" ]; then
    grep -o " $DATA_ROOT[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$DATA_ROOT"
    log "removed $DATA_ROOT"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  purge) purge ;;
  env) echo "$ENVFILE" ;;
  status) api_up ;;
  *) echo "usage: $0 start|stop|purge|env|status" >&2; exit 2 ;;
esac
