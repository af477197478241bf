# Postgres 15 for the MLflow backend store. Context: docker/. See docs/docker.md.
# Real default: the official image pinned by tag+digest (its own entrypoint does initdb).
# CI (no registry) overrides BASE_IMAGE with the local debootstrap base; then Debian's postgresql-15 is
# installed and docker/postgres-entrypoint.sh provides the same POSTGRES_USER/PASSWORD/DB initialisation.
ARG BASE_IMAGE=postgres:15-bookworm@sha256:5d1d70e254e3c5d7d76847a9deebb18478cd518df37abf6b278d4bdb1fe5d96c
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# No-op on the official image. On Debian: the postgres user gets the official image's uid/gid 999 (so that
# `USER 999:999` below and volume ownership are the same on both), and no default cluster is created
# (initdb runs at first start, into the volume).
RUN if [ ! -x /usr/lib/postgresql/15/bin/postgres ]; then \
      groupadd --system --gid 999 postgres \
      && useradd --system --uid 999 --gid 999 --home-dir /var/lib/postgresql --shell /bin/bash postgres \
      && install -d /etc/postgresql-common/createcluster.d \
      && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/w2s.conf \
      && apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
      && rm -rf /var/lib/apt/lists/*; \
    fi

ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data

# Create the data dir owned by postgres in the image: a fresh named volume copies its ownership; without it
# initdb fails ("could not change permissions of directory ... Operation not permitted").
RUN install -d -o postgres -g postgres -m 700 "$PGDATA" \
    && install -d -o postgres -g postgres -m 2775 /var/run/postgresql

COPY --chmod=755 postgres-entrypoint.sh /usr/local/bin/w2s-postgres-entrypoint.sh

USER 999:999
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["w2s-postgres-entrypoint.sh"]
CMD ["postgres"]
