"""What the service owns while it runs: two asyncpg pools, one S3 client, the job
supervisor, the analysis processes and the sensor name cache."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import asyncpg
from fastapi import FastAPI

from app.anomalies.analysis_pool import AnalysisPool
from app.core.config import Settings
from app.core.db import connect_with_retry, create_pool
from app.core.migrations import Database, apply_migrations
from app.jobs.service import JobSupervisor
from app.sensors.directory import SensorDirectory
from app.sensors.service import finish_pending_deletes
from app.storage.s3 import S3Client, open_s3_client

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    settings: Settings
    metadata_pool: asyncpg.Pool
    timeseries_pool: asyncpg.Pool
    s3: S3Client
    jobs: JobSupervisor
    analysis: AnalysisPool
    sensors: SensorDirectory


async def migrate_databases(settings: Settings) -> dict[Database, list[str]]:
    """Apply pending migrations to both databases, waiting for them to come up first."""
    applied = {}
    for database, dsn in (
        (Database.METADATA, settings.metadata_database_url),
        (Database.TIMESERIES, settings.timeseries_database_url),
    ):
        connection = await connect_with_retry(dsn, timeout_seconds=settings.startup_timeout_seconds)
        try:
            applied[database] = await apply_migrations(
                connection, database, settings.migrations_dir
            )
        finally:
            await connection.close()
    return applied


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    async with AsyncExitStack() as stack:
        if settings.migrate_on_startup:
            await migrate_databases(settings)
        pools = []
        for name, dsn in (
            ("metadata", settings.metadata_database_url),
            ("timeseries", settings.timeseries_database_url),
        ):
            # Startup waits for the database (compose starts everything at once); later
            # outages show up in /readyz instead of crashing the process.
            probe = await connect_with_retry(dsn, timeout_seconds=settings.startup_timeout_seconds)
            await probe.close()
            pool = await create_pool(
                dsn,
                application_name=f"sensor-service/{name}",
                min_size=settings.db_pool_min_size,
                max_size=settings.db_pool_max_size,
                command_timeout=settings.db_command_timeout_seconds,
                statement_timeout=settings.db_statement_timeout_seconds,
            )
            stack.push_async_callback(pool.close)
            pools.append(pool)
        s3 = await open_s3_client(settings, stack)
        await finish_pending_deletes(pools[0], pools[1])
        sensors = SensorDirectory(pools[0], settings.metadata_database_url)
        await sensors.start()
        stack.push_async_callback(sensors.close)
        analysis = AnalysisPool(
            settings.analysis_workers,
            max_pending=settings.analysis_max_pending,
            timeout_seconds=settings.analysis_timeout_seconds,
        )
        stack.push_async_callback(analysis.close)
        if settings.analysis_prewarm:
            analysis.prewarm()
        jobs = JobSupervisor(
            pools[0],
            settings.metadata_database_url,
            record_retry_seconds=settings.job_record_retry_seconds,
        )
        await jobs.recover_abandoned()
        # Runs before the pools close: jobs stop at a batch boundary and are recorded.
        stack.push_async_callback(jobs.shutdown, settings.job_shutdown_grace_seconds)
        yield Resources(
            settings,
            metadata_pool=pools[0],
            timeseries_pool=pools[1],
            s3=s3,
            jobs=jobs,
            analysis=analysis,
            sensors=sensors,
        )


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[dict[str, Resources]]]


def lifespan_for(settings: Settings) -> Lifespan:
    """The app's lifespan: resources exist between startup and shutdown, nowhere else."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Resources]]:
        async with open_resources(settings) as resources:
            # Everything allocated during startup (modules, settings, pools) lives for the
            # process: frozen, the garbage collector stops rescanning it. Full collections
            # went from ~75 ms (every second under write load, stalling every request in
            # flight) to under 1 ms (bench/live_writes.py).
            gc.collect()
            gc.freeze()
            logger.info("sensor-service ready: %s", settings.describe())
            yield {"resources": resources}

    return lifespan
