"""GET /metrics through the HTTP API, against real PostgreSQL and S3: what each metric
counts, read as the difference between two scrapes (counters are process-wide and other
tests of the run count too)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.config import Settings
from app.storage.s3 import S3Client, ensure_bucket
from tests.conftest import IngestEnvironment, empty_databases, running_app
from tests.helpers import run_job

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

A = str(uuid.UUID(int=0xA1))
B = str(uuid.UUID(int=0xB1))
MAPPING = f"sensor_name;sensor_uuid\nsensor_a;{A}\nsensor_b;{B}\nnot a line\n"
TIMESERIES = (
    "timestamp;sensor_uuid;sensor_value\n"
    f"2024-03-01 10:00:00;{A};1.5\n"
    f"2024-03-01 10:15:00;{A};1.75\n"
    f"2024-03-01 10:00:00;{B};-3\n"
    f"yesterday;{B};0\n"
)


@pytest.fixture(scope="module")
async def bucket(settings: Settings, s3: S3Client) -> str:
    """One bucket for the module: a SeaweedFS test session has only so many."""
    name = f"metrics-{secrets.token_hex(6)}"
    await ensure_bucket(s3, name)
    return name


@asynccontextmanager
async def environment(settings: Settings, s3: S3Client, bucket: str) -> AsyncIterator[Any]:
    await empty_databases(settings)
    configured = settings.model_copy(update={"s3_bucket": bucket})
    async with running_app(configured) as client:
        yield IngestEnvironment(client, configured, s3)


@pytest.fixture
async def service(settings: Settings, s3: S3Client, bucket: str) -> AsyncIterator[Any]:
    async with environment(settings, s3, bucket) as running:
        yield running


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def increase(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def ingested(before: Samples, after: Samples, source: str) -> dict[str, float]:
    rows = {
        outcome: increase(before, after, "sensor_ingest_rows_total", source=source, outcome=outcome)
        for outcome in ("inserted", "duplicate", "rejected")
    }
    rows["bytes"] = increase(before, after, "sensor_ingest_bytes_total", source=source)
    return rows


async def test_metrics_is_prometheus_text_tagged_operations(
    service: IngestEnvironment,
) -> None:
    response = await service.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "sensor_http_request_duration_seconds",
        "sensor_ingest_rows",
        "sensor_ingest_bytes",
        "sensor_jobs",
        "sensor_db_pool_connections",
        "process_resident_memory_bytes",
    } <= names
    operation = (await service.client.get("/openapi.json")).json()["paths"]["/metrics"]["get"]
    assert operation["tags"] == ["operations"]


async def test_latency_is_labelled_by_route_template_never_by_concrete_path(
    service: IngestEnvironment,
) -> None:
    labels = {"method": "GET", "route": "/sensors/{sensor_name}", "status": "404"}
    before = await scrape(service.client)
    for name in ("sensor_zq_1", "sensor_zq_2", "sensor_zq_3"):
        assert (await service.client.get(f"/sensors/{name}")).status_code == 404
    response = await service.client.get("/metrics")
    after = await scrape(service.client)
    assert increase(before, after, "sensor_http_request_duration_seconds_count", **labels) == 3
    # Every bucket from 30 s up holds all three; the sum is their total time.
    assert (
        increase(before, after, "sensor_http_request_duration_seconds_bucket", **labels, le="30.0")
        == 3
    )
    assert 0 < increase(before, after, "sensor_http_request_duration_seconds_sum", **labels) < 30
    assert "sensor_zq_" not in response.text
    assert 'route="/metrics"' in response.text


async def test_ingestion_jobs_count_committed_rows_and_bytes(
    service: IngestEnvironment,
) -> None:
    await service.put("mapping.csv", MAPPING)
    await service.put("Timeseries/a.csv", TIMESERIES)
    before = await scrape(service.client)
    assert (await run_job(service.client, "/ingest/mapping"))["status"] == "completed_with_errors"
    mapped = await scrape(service.client)
    assert ingested(before, mapped, "mapping") == {
        "inserted": 2,
        "duplicate": 0,
        "rejected": 1,
        "bytes": len(MAPPING.encode()),
    }

    job = await run_job(service.client, "/ingest/timeseries")
    assert (job["rows_inserted"], job["rows_rejected"]) == (3, 1)
    loaded = await scrape(service.client)
    assert ingested(mapped, loaded, "timeseries") == {
        "inserted": 3,
        "duplicate": 0,
        "rejected": 1,
        "bytes": len(TIMESERIES.encode()),
    }

    await run_job(service.client, "/ingest/timeseries", {"reload": True})
    reloaded = await scrape(service.client)
    assert ingested(loaded, reloaded, "timeseries") == {
        "inserted": 0,
        "duplicate": 3,
        "rejected": 1,
        "bytes": len(TIMESERIES.encode()),
    }
    assert ingested(before, reloaded, "live") == dict.fromkeys(
        ("inserted", "duplicate", "rejected", "bytes"), 0
    )


async def test_live_writes_count_inserted_duplicate_and_rejected_rows(
    service: IngestEnvironment,
) -> None:
    await service.put("mapping.csv", MAPPING)
    await run_job(service.client, "/ingest/mapping")
    batch = orjson.dumps(
        [
            {"sensor_name": "sensor_a", "timestamp": "2024-03-01T10:00:00Z", "value": 1},
            {"sensor_name": "sensor_b", "timestamp": "2024-03-01T10:00:00Z", "value": 2},
            {"sensor_name": "sensor_a", "timestamp": "2024-03-01T10:00:00Z", "value": 3},
            {"sensor_name": "sensor_unknown", "timestamp": "2024-03-01T10:00:00Z", "value": 4},
        ]
    )
    refused = orjson.dumps(
        [{"sensor_name": "sensor_unknown", "timestamp": "2024-03-01T10:00:00Z", "value": 5}] * 2
    )
    headers = {"Content-Type": "application/json"}
    before = await scrape(service.client)
    written = await service.client.post("/readings", content=batch, headers=headers)
    assert written.status_code == 200, written.text
    assert (written.json()["inserted"], written.json()["duplicate"]) == (2, 1)
    assert (
        await service.client.post("/readings", content=refused, headers=headers)
    ).status_code == 422
    after = await scrape(service.client)
    assert ingested(before, after, "live") == {
        "inserted": 2,
        "duplicate": 1,
        "rejected": 1 + 2,
        "bytes": len(batch) + len(refused),
    }


async def test_job_counts_are_read_from_the_jobs_table(service: IngestEnvironment) -> None:
    failed = await run_job(service.client, "/ingest/timeseries")
    assert failed["status"] == "failed"  # no mapping loaded yet
    await service.put("mapping.csv", f"sensor_name;sensor_uuid\nsensor_a;{A}\n")
    assert (await run_job(service.client, "/ingest/mapping"))["status"] == "succeeded"
    # A job another replica recorded: this process never saw it, the table has it.
    connection = await service.metadata()
    try:
        await connection.execute(
            "INSERT INTO jobs (id, kind, status, params, finished_at) "
            "VALUES ($1, 'anomaly_scan', 'cancelled', '{}', now())",
            uuid.uuid4(),
        )
    finally:
        await connection.close()
    samples = await scrape(service.client)
    jobs = {
        (dict(labels)["kind"], dict(labels)["status"]): count
        for (name, labels), count in samples.items()
        if name == "sensor_jobs"
    }
    assert len(jobs) == 3 * 6  # every kind and status, 0 included
    assert {pair: count for pair, count in jobs.items() if count} == {
        ("ingest_timeseries", "failed"): 1,
        ("ingest_mapping", "succeeded"): 1,
        ("anomaly_scan", "cancelled"): 1,
    }
    assert value(samples, "sensor_jobs_query_success") == 1


async def test_pool_and_analysis_gauges_describe_this_process(
    service: IngestEnvironment,
) -> None:
    settings = service.settings
    samples = await scrape(service.client)
    for pool in ("metadata", "timeseries"):
        size = value(samples, "sensor_db_pool_connections", pool=pool)
        idle = value(samples, "sensor_db_pool_idle_connections", pool=pool)
        assert value(samples, "sensor_db_pool_max_connections", pool=pool) == (
            settings.db_pool_max_size
        )
        assert settings.db_pool_min_size <= size <= settings.db_pool_max_size
        assert 0 <= idle <= size
    assert value(samples, "sensor_analysis_workers") == settings.analysis_workers
    assert value(samples, "sensor_analysis_max_requests") == settings.analysis_max_pending
    assert value(samples, "sensor_analysis_requests") == 0
    assert value(samples, "sensor_analysis_computations") == 0
