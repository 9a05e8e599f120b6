"""Limits on what one request may ask of the service, each a 4xx that names the limit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import orjson

from app.core.config import Settings
from app.storage.s3 import S3Client
from tests.conftest import running_app


async def test_a_body_over_request_max_bytes_gets_413_declared_or_chunked(
    settings: Settings, s3: S3Client
) -> None:
    small = settings.model_copy(update={"request_max_bytes": 2048})
    oversized = orjson.dumps({"name": "too-big", "location": "x" * 4096})

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(oversized), 512):
            yield oversized[start : start + 512]

    async with running_app(small) as client:
        declared = await client.post(
            "/sensors", content=oversized, headers={"Content-Type": "application/json"}
        )
        streamed = await client.post(
            "/sensors", content=chunked(), headers={"Content-Type": "application/json"}
        )
        listed = (await client.get("/sensors", params={"prefix": "too-big"})).json()
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.json() == {
            "error": "payload_too_large",
            "detail": "the request body is larger than REQUEST_MAX_BYTES = 2,048 bytes",
            "context": {"max_bytes": 2048},
        }
    assert listed["items"] == []


async def test_live_writes_keep_their_own_larger_limit(settings: Settings, s3: S3Client) -> None:
    small = settings.model_copy(update={"request_max_bytes": 2048})
    batch = orjson.dumps(
        [{"sensor_name": "no-such-sensor", "timestamp": "2020-01-01T00:00:00Z", "value": 1.0}] * 100
    )
    assert len(batch) > 2048
    async with running_app(small) as client:
        response = await client.post(
            "/readings", content=batch, headers={"Content-Type": "application/json"}
        )
    # Read and validated (every row names an unknown sensor), not refused for its size.
    assert response.status_code == 422, response.text
    assert response.json()["context"]["rejected_count"] == 100


async def test_a_query_over_the_statement_timeout_gets_422_naming_it(
    settings: Settings, s3: S3Client
) -> None:
    quick = settings.model_copy(update={"db_statement_timeout_seconds": 0.2})
    async with running_app(quick) as client:
        blocker = await asyncpg.connect(settings.metadata_database_url)
        try:
            # The listing waits on this lock until PostgreSQL cancels it.
            async with blocker.transaction():
                await blocker.execute("LOCK TABLE sensors IN ACCESS EXCLUSIVE MODE")
                response = await client.get("/sensors")
        finally:
            await blocker.close()
        after = await client.get("/sensors")
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "query_timeout"
    assert "DB_STATEMENT_TIMEOUT_SECONDS = 0.2 s" in response.json()["detail"]
    assert after.status_code == 200
