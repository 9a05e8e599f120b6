"""ASGI entry point: `uvicorn app.main:app`."""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from app.anomalies.router import router as anomalies_router
from app.core.config import Settings
from app.core.errors import (
    Forbidden,
    InvalidInput,
    Unauthorized,
    error_responses,
    register_error_handlers,
)
from app.core.lifespan import lifespan_for
from app.core.limits import RequestBodyLimit
from app.core.logs import configure_logging
from app.core.middleware import observe_requests
from app.core.security import authorize
from app.health.router import router as health_router
from app.ingest.router import router as ingest_router
from app.metrics.instruments import observe_request
from app.metrics.router import router as metrics_router
from app.readings.router import router as readings_router
from app.sensors.router import router as sensors_router

DESCRIPTION = """
Sensor readings from an S3 bucket of CSV files, by sensor **name**.

* Ingestion: `POST /ingest/mapping`, `POST /ingest/timeseries` start background jobs;
  `GET /ingest/jobs/{id}` shows their progress, `DELETE` cancels.
* Sensors: `GET /sensors` (by name prefix, paginated), `GET /sensors/{name}`.
* Readings: `GET /readings?sensor_name=&start=&end=` pages (JSON) or streams the whole
  range (`format=csv|ndjson`; `pd.read_csv(url, storage_options={"X-API-Key": key})`).
* Anomalies: `GET /anomalies?sensor_name=&start=&end=` (change points, a regression per
  segment, flagged readings, explained), `GET /anomalies/plot` (PNG), `POST /anomalies/scan`
  (every sensor, as a job) and `GET /anomalies/report` (sensors ranked).
* Health: `/healthz` (process up), `/readyz` (databases and bucket reachable).
* Operations: `GET /metrics` (Prometheus text format). Every response carries
  `X-Request-ID` (the caller's, or a new one), which the service's log lines carry too.

Every other endpoint needs an `X-API-Key` header holding a key from `API_KEYS` (use
**Authorize**): `read:` keys may GET, `write:` keys may change data, bare keys may do both.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings)
    if not settings.api_keys:
        logging.getLogger(__name__).warning(
            "API_KEYS is empty: reads need no key and every write is refused (403)"
        )
    # Swagger UI and ReDoc assets are served by the service itself, not from a CDN, so the
    # docs work on isolated networks too.
    app = FastAPIOffline(
        title="sensor-service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan_for(settings),
    )
    register_error_handlers(app)
    app.add_middleware(RequestBodyLimit, max_bytes=settings.request_max_bytes)
    app.include_router(health_router)
    # Everything but health and the docs needs a key; the scope follows the method.
    for router in (
        ingest_router,
        sensors_router,
        readings_router,
        anomalies_router,
        metrics_router,
    ):
        app.include_router(
            router,
            dependencies=[Depends(authorize)],
            responses=error_responses(Unauthorized, Forbidden, InvalidInput),
        )
    observe_requests(app, observe_request)
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn app.main:app` builds the app on first access, not at import time, so that
    # importing this module (tests, tooling) never reads the environment.
    if name == "app":
        return create_app()
    raise AttributeError(name)
