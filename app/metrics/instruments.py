"""The metrics the service counts as it works: request latency, and rows and bytes taken in
by ingestion jobs and live writes.

They are module-level objects, the one exception to "nothing happens at import time":
a metric is process-wide by nature, and prometheus-client's multiprocess mode (several
uvicorn workers, PROMETHEUS_MULTIPROC_DIR) keeps each one in a file per process, which it
expects to be created once. Only counters and histograms live here: they add up across
worker processes, dead ones included. Gauges of the moment (pools, jobs) are read when
/metrics is scraped, see collectors.py.

This module imports nothing of the app, so that any layer may count without cycles.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from prometheus_client import Counter, Histogram

# 10 ms and 50 ms, the readings targets for p50 and p99, are bucket bounds, so the share of
# requests within them is exact; steps of ~1.5-2x from 2.5 ms to 100 ms, where reads and
# live writes land; whole-range streams and anomaly fits (timeout 30 s) go up to 30 s.
LATENCY_BUCKETS: Final = (
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
    30.0,
)
# Anything else (a client may send any token as the method) is counted as OTHER, so that
# clients cannot create label values.
KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUEST_DURATION: Final = Histogram(
    "sensor_http_request_duration_seconds",
    "Time from a request's arrival until its last response byte was handed to the server, "
    "by route template (never the concrete path), method and status code.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)


class IngestSource(StrEnum):
    TIMESERIES = "timeseries"
    MAPPING = "mapping"
    LIVE = "live"


class RowOutcome(StrEnum):
    INSERTED = "inserted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


INGEST_ROWS: Final = Counter(
    "sensor_ingest_rows",
    "Rows taken in, by source (timeseries and mapping jobs, live writes) and outcome, "
    "counted when their transaction committed.",
    ["source", "outcome"],
)
INGEST_BYTES: Final = Counter(
    "sensor_ingest_bytes",
    "Bytes of input: objects loaded by ingestion jobs (as stored, so compressed for .gz) "
    "and request bodies of live writes.",
    ["source"],
)

# Every combination exists from the start at 0, so rate() and alerts see a series before
# the first row arrives.
for _source in IngestSource:
    INGEST_BYTES.labels(_source.value)
    for _outcome in RowOutcome:
        INGEST_ROWS.labels(_source.value, _outcome.value)

_request_series: dict[tuple[str, str, int], Histogram] = {}


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """One finished request; called by the request middleware for every request."""
    key = (method if method in KNOWN_METHODS else "OTHER", route, status)
    # The labelled child is cached: labels() validates and locks on every call, and this
    # runs once per request. The key space is bounded (methods, routes, status codes).
    series = _request_series.get(key)
    if series is None:
        series = _request_series[key] = REQUEST_DURATION.labels(key[0], route, str(status))
    series.observe(seconds)


def count_rows(
    source: IngestSource, *, inserted: int = 0, duplicate: int = 0, rejected: int = 0
) -> None:
    for outcome, rows in (
        (RowOutcome.INSERTED, inserted),
        (RowOutcome.DUPLICATE, duplicate),
        (RowOutcome.REJECTED, rejected),
    ):
        if rows:
            INGEST_ROWS.labels(source.value, outcome.value).inc(rows)


def count_bytes(source: IngestSource, size: int) -> None:
    if size:
        INGEST_BYTES.labels(source.value).inc(size)
