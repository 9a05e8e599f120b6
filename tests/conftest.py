"""Real infrastructure for the tests: a SeaweedFS S3 server started for the run, and
throwaway databases on the PostgreSQL at TEST_POSTGRES_URL (default: 127.0.0.1:5432,
trust auth). The schema is applied from db_init/ once per run; nothing is mocked."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.core.config import Settings
from app.core.security import API_KEY_HEADER
from app.devstack.postgres import with_database
from app.devstack.seaweed import SeaweedServer
from app.main import create_app
from app.storage.s3 import S3Client, ensure_bucket, open_s3_client
from tests.helpers import READ_KEY, TEST_KEY, WRITE_KEY, migrate_fresh_databases

ADMIN_POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    access_key: str
    secret_key: str


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    server = SeaweedServer(
        tmp_path_factory.mktemp("seaweed"),
        access_key="sensor-test",
        secret_key=secrets.token_urlsafe(16),
        max_volumes=4000,  # a fresh bucket per ingestion test
    )
    with server:
        yield S3Endpoint(server.endpoint_url, server.access_key, server.secret_key)


@pytest.fixture(scope="session")
async def database_urls() -> AsyncIterator[tuple[str, str]]:
    """A throwaway metadata and timeseries database, migrated once, dropped at the end."""
    run_id = secrets.token_hex(4)
    names = (f"sensor_test_{run_id}_metadata", f"sensor_test_{run_id}_timeseries")
    admin = await asyncpg.connect(ADMIN_POSTGRES_URL)
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
        urls = (
            with_database(ADMIN_POSTGRES_URL, names[0]),
            with_database(ADMIN_POSTGRES_URL, names[1]),
        )
        await migrate_fresh_databases(*urls)
        yield urls
    finally:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
def settings(database_urls: tuple[str, str], s3_endpoint: S3Endpoint) -> Settings:
    return Settings(
        _env_file=None,
        metadata_database_url=database_urls[0],
        timeseries_database_url=database_urls[1],
        s3_endpoint_url=s3_endpoint.url,
        s3_access_key_id=s3_endpoint.access_key,
        s3_secret_access_key=s3_endpoint.secret_key,
        s3_bucket="sensor-test-data",
        api_keys=f"tester@{TEST_KEY},reader@read:{READ_KEY},writer@write:{WRITE_KEY}",
        migrate_on_startup=False,
        startup_timeout_seconds=5,
        analysis_workers=2,
        # Each test app would otherwise start (and stop) its analysis processes.
        analysis_prewarm=False,
    )


@pytest.fixture(scope="session")
async def s3(settings: Settings) -> AsyncIterator[S3Client]:
    async with AsyncExitStack() as stack:
        client = await open_s3_client(settings, stack)
        await ensure_bucket(client, settings.s3_bucket)
        yield client


@asynccontextmanager
async def running_app(
    settings: Settings, api_key: str | None = TEST_KEY
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, called in-process over ASGI; the client sends
    `api_key` (by default the tests' key with both scopes) unless it is None."""
    app = create_app(settings)
    headers = {API_KEY_HEADER: api_key} if api_key else {}
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://test", headers=headers
        ) as http,
    ):
        yield http


@pytest.fixture
async def client(settings: Settings, s3: S3Client) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings) as http:
        yield http


TIMESERIES_TABLES = "readings, ingested_objects, ingest_rejections, sensor_stats"
METADATA_TABLES = "sensors, jobs, job_errors, anomaly_scan_results"


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


@asynccontextmanager
async def ingest_environment(settings: Settings, s3: S3Client) -> AsyncIterator[IngestEnvironment]:
    """Empty databases, a fresh bucket, and the app running on them."""
    await empty_databases(settings)
    bucket_settings = settings.model_copy(update={"s3_bucket": f"ingest-{secrets.token_hex(6)}"})
    await ensure_bucket(s3, bucket_settings.s3_bucket)
    async with running_app(bucket_settings) as client:
        yield IngestEnvironment(client, bucket_settings, s3)


@pytest.fixture
async def ingest(settings: Settings, s3: S3Client) -> AsyncIterator[IngestEnvironment]:
    async with ingest_environment(settings, s3) as environment:
        yield environment
