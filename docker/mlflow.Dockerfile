# MLflow tracking server: mlflow 3.17.2 + psycopg2 (Postgres backend) + boto3 (S3 artifact stores), all baked
# in from a hashed lock (no pip at container start). Context: docker/. See docs/docker.md.
# CI (no registry) overrides BASE_IMAGE with the local debootstrap base (docker/build.sh, W2S_LOCAL_BASE=1).
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

COPY mlflow-requirements.lock /opt/mlflow/requirements.lock
# The optional BuildKit secret `ca` (corporate CA bundle) is used only when non-empty.
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes \
       -r /opt/mlflow/requirements.lock \
    && /opt/venv/bin/pip check \
    && useradd --create-home --uid 1000 --user-group mlflow \
    && install -d -o mlflow -g mlflow /mlartifacts

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false

USER 1000:1000
WORKDIR /home/mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--help"]
