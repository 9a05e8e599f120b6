"""The sensor name cache: correct across renames and deletes made anywhere, and never
trusted while its LISTEN connection is down. Real PostgreSQL, real notifications."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from app.core.db import create_pool
from app.sensors.directory import CHANNEL, SensorDirectory
from app.sensors.exceptions import SensorNotFound
from tests.conftest import IngestEnvironment

A = uuid.UUID(int=31)


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {seconds} s")
        await asyncio.sleep(0.02)


@pytest.fixture
async def registry(ingest: IngestEnvironment) -> AsyncIterator[asyncpg.Connection]:
    """The metadata database with one sensor, `a`, seen through a second connection."""
    connection = await ingest.metadata()
    await connection.execute("INSERT INTO sensors (sensor_name, sensor_uuid) VALUES ('a', $1)", A)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def directory(ingest: IngestEnvironment) -> AsyncIterator[SensorDirectory]:
    pool = await create_pool(
        ingest.settings.metadata_database_url,
        application_name="test",
        min_size=1,
        max_size=2,
        command_timeout=10,
    )
    directory = SensorDirectory(pool, ingest.settings.metadata_database_url)
    await directory.start()
    try:
        yield directory
    finally:
        await directory.close()
        await pool.close()


async def is_gone(directory: SensorDirectory, name: str) -> bool:
    try:
        await directory.uuid_of(name)
    except SensorNotFound:
        return True
    return False


async def test_a_rename_elsewhere_is_seen_at_once(
    registry: asyncpg.Connection, directory: SensorDirectory
) -> None:
    assert directory.live
    assert await directory.uuid_of("a") == A  # now cached
    await registry.execute("UPDATE sensors SET sensor_name = 'b' WHERE sensor_name = 'a'")
    # Within the notification's delivery, far below the 30 s safety expiry.
    await eventually(lambda: is_gone(directory, "a"), seconds=2)
    assert await directory.uuid_of("b") == A


async def test_a_delete_elsewhere_is_seen_at_once(
    registry: asyncpg.Connection, directory: SensorDirectory
) -> None:
    assert await directory.uuid_of("a") == A
    await registry.execute("DELETE FROM sensors WHERE sensor_name = 'a'")
    await eventually(lambda: is_gone(directory, "a"), seconds=2)


async def test_an_unknown_name_is_not_cached(
    registry: asyncpg.Connection, directory: SensorDirectory
) -> None:
    with pytest.raises(SensorNotFound):
        await directory.uuid_of("new")
    await registry.execute(
        "INSERT INTO sensors (sensor_name, sensor_uuid) VALUES ('new', $1)", uuid.UUID(int=32)
    )
    assert await directory.uuid_of("new") == uuid.UUID(int=32)


async def test_without_its_listener_the_cache_is_bypassed_until_it_reconnects(
    registry: asyncpg.Connection, directory: SensorDirectory
) -> None:
    assert await directory.uuid_of("a") == A
    await registry.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query = $1",
        f'LISTEN "{CHANNEL}"',
    )

    async def offline() -> bool:
        return not directory.live

    await eventually(offline)
    # No notification can arrive now; the rename must still be seen.
    await registry.execute("UPDATE sensors SET sensor_name = 'b' WHERE sensor_name = 'a'")
    assert await is_gone(directory, "a")

    async def online() -> bool:
        return directory.live

    await eventually(online, seconds=10)
    assert await directory.uuid_of("b") == A
    await registry.execute("UPDATE sensors SET sensor_name = 'c' WHERE sensor_name = 'b'")
    await eventually(lambda: is_gone(directory, "b"), seconds=2)


async def test_the_readings_api_follows_a_rename(ingest: IngestEnvironment) -> None:
    connection = await ingest.metadata()
    try:
        await connection.execute(
            "INSERT INTO sensors (sensor_name, sensor_uuid) VALUES ('a', $1)", A
        )
        params = {"start": "2013-01-01", "end": "2013-01-02"}
        assert (
            await ingest.client.get("/readings", params={**params, "sensor_name": "a"})
        ).status_code == 200
        await connection.execute("UPDATE sensors SET sensor_name = 'b' WHERE sensor_name = 'a'")

        async def old_name_is_404() -> bool:
            response = await ingest.client.get("/readings", params={**params, "sensor_name": "a"})
            return response.status_code == 404

        await eventually(old_name_is_404, seconds=2)
        renamed = await ingest.client.get("/readings", params={**params, "sensor_name": "b"})
        assert renamed.json()["sensor_uuid"] == str(A)
    finally:
        await connection.close()
