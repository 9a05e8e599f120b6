from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.core.config import Settings
from app.main import create_app
from app.storage.s3 import S3Client, ensure_bucket

TIMESERIES_TABLES = "readings, ingested_objects, ingest_rejections"
METADATA_TABLES = "sensors, jobs, job_errors"


@dataclass
class IngestEnvironment:
    """A client on a fresh bucket, with both databases emptied."""

    client: httpx.AsyncClient
    settings: Settings
    s3: S3Client

    @property
    def bucket(self) -> str:
        return self.settings.s3_bucket

    async def put(self, key: str, body: bytes | str) -> None:
        data = body.encode() if isinstance(body, str) else body
        await self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)

    async def timeseries(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.settings.timeseries_database_url)

    async def metadata(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.settings.metadata_database_url)


async def empty_databases(settings: Settings) -> None:
    for url, tables in (
        (settings.timeseries_database_url, TIMESERIES_TABLES),
        (settings.metadata_database_url, METADATA_TABLES),
    ):
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(f"TRUNCATE {tables}")
        finally:
            await connection.close()


@pytest.fixture
async def ingest(settings: Settings, s3: S3Client) -> AsyncIterator[IngestEnvironment]:
    await empty_databases(settings)
    bucket_settings = settings.model_copy(update={"s3_bucket": f"ingest-{secrets.token_hex(6)}"})
    await ensure_bucket(s3, bucket_settings.s3_bucket)
    app = create_app(bucket_settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://test"
        ) as client,
    ):
        yield IngestEnvironment(client, bucket_settings, s3)
