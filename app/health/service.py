"""Readiness: can this process reach both databases and the bucket right now?"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg

from app.core.lifespan import Resources
from app.health import repository
from app.health.schemas import DependencyCheck, Readiness
from app.storage.s3 import StorageError, check_bucket


async def _timed(check: Callable[[], Awaitable[str]], limit_seconds: float) -> DependencyCheck:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(check(), limit_seconds)
        ok = True
    except TimeoutError:
        detail, ok = f"no answer within {limit_seconds:g}s", False
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, StorageError) as exc:
        detail, ok = f"{type(exc).__name__}: {exc}", False
    latency_ms = round((time.perf_counter() - started) * 1000, 2)
    return DependencyCheck(ok=ok, latency_ms=latency_ms, detail=detail)


async def check_readiness(resources: Resources) -> Readiness:
    settings = resources.settings

    async def metadata() -> str:
        async with resources.metadata_pool.acquire() as connection:
            return f"PostgreSQL {await repository.server_version(connection)}"

    async def timeseries() -> str:
        async with resources.timeseries_pool.acquire() as connection:
            version = await repository.server_version(connection)
            storage = await repository.readings_storage(connection)
        if storage is None:
            raise StorageError("schema not migrated: run `python -m app migrate`")
        return f"PostgreSQL {version}, readings: {storage}"

    async def bucket() -> str:
        await check_bucket(resources.s3, settings.s3_bucket)
        return f"bucket {settings.s3_bucket!r} reachable"

    names = ("metadata_db", "timeseries_db", "object_store")
    results = await asyncio.gather(
        *(
            _timed(check, settings.readiness_timeout_seconds)
            for check in (metadata, timeseries, bucket)
        )
    )
    checks = dict(zip(names, results, strict=True))
    failed = [name for name, check in checks.items() if not check.ok]
    return Readiness(status="unavailable" if failed else "ready", failed=failed, checks=checks)
