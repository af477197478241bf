#!/bin/sh
# Entrypoint of localhost/w2s-postgres. On the official postgres image it hands over to the official
# docker-entrypoint.sh. On the Debian-based CI image it implements the subset that docker-compose.yml uses:
# POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB, initialised once into an empty $PGDATA.
set -eu
if [ -x /usr/local/bin/docker-entrypoint.sh ]; then
  exec /usr/local/bin/docker-entrypoint.sh "$@"
fi

: "${PGDATA:=/var/lib/postgresql/data}"
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "w2s-postgres: POSTGRES_PASSWORD must be set to initialise $PGDATA" >&2
    exit 1
  fi
  echo "w2s-postgres: initialising $PGDATA" >&2
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 > /dev/null
  rm -f "$pwfile"
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    sock=$(mktemp -d)
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k $sock" -w start > /dev/null
    psql -h "$sock" -U "$POSTGRES_USER" -d postgres -v ON_ERROR_STOP=1 -q \
      -c "CREATE DATABASE \"$POSTGRES_DB\"" > /dev/null
    pg_ctl -D "$PGDATA" -m fast -w stop > /dev/null
    rm -rf "$sock"
  fi
  echo "w2s-postgres: initialised (user $POSTGRES_USER, database $POSTGRES_DB)" >&2
fi
exec "$@"
