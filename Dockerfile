# Sensor-data service image.
#
#   docker build -t sensor-service .
#   docker run --rm -p 8000:8000 --env-file .env sensor-service
#
# The image also carries the CLIs:
#   docker run --rm --env-file .env sensor-service python -m app migrate
#   docker run --rm --env-file .env sensor-service python -m app.devdata seed --preset demo
#
# Needs BuildKit (the default builder of Docker >= 23 and of `docker compose`)
# for the uv cache mount.

# ---------------------------------------------------------------------------
# builder: resolve the locked runtime dependencies into /opt/venv with uv.
# Every runtime dependency in uv.lock ships a cp311 manylinux wheel for both
# amd64 and arm64, so no compiler or -dev packages are needed here.  If a
# future dependency only ships an sdist, add its build deps to this stage
# (never to the runtime stage).
# ---------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/opt/venv

RUN pip install --no-cache-dir uv==0.13.9

WORKDIR /build

# Only the dependency manifests: source edits must not invalidate this layer.
COPY pyproject.toml uv.lock ./

RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# ---------------------------------------------------------------------------
# runtime: slim base, the prebuilt venv, the app code, a non-root user.
# Same base image as the builder, so the venv's python symlink
# (/usr/local/bin/python3.11) resolves identically.
# ---------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime

ARG APP_UID=10001
ARG APP_GID=10001
ARG VERSION=0.1.0

LABEL org.opencontainers.image.title="sensor-service" \
      org.opencontainers.image.description="Asynchronous REST service for IoT sensor data: S3 CSV ingestion into PostgreSQL/TimescaleDB, readings by sensor name, anomaly detection." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH="/opt/venv/bin:${PATH}" \
    PYTHONPATH=/app \
    MPLCONFIGDIR=/tmp/matplotlib \
    LOG_FORMAT=json

RUN groupadd --system --gid "${APP_GID}" app \
    && useradd --system --uid "${APP_UID}" --gid app \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin app

WORKDIR /app

# Code and venv stay owned by root: the service user can read but not modify them.
COPY --from=builder /opt/venv /opt/venv
COPY pyproject.toml ./
COPY db_init/ ./db_init/
COPY app/ ./app/

USER ${APP_UID}:${APP_GID}

EXPOSE 8000

# Liveness only (process up); /readyz (databases + bucket) is for orchestrators.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# --proxy-headers trusts X-Forwarded-* only from FORWARDED_ALLOW_IPS
# (uvicorn's default 127.0.0.1,::1); set that env var to the proxy's address
# when running behind one.  The graceful-shutdown timeout stays below Docker's
# default 10 s stop timeout so in-flight requests drain before SIGKILL.
# --no-access-log: the app writes one JSON access line per request itself
# (LOG_FORMAT=json by default), with its X-Request-ID.
CMD ["uvicorn", "app.main:app", \
     "--host", "0.0.0.0", \
     "--port", "8000", \
     "--proxy-headers", \
     "--no-access-log", \
     "--timeout-graceful-shutdown", "8"]
