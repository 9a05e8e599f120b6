"""Sensor name -> uuid, the lookup in front of every readings and anomalies request,
cached in the process.

The cache is only trusted while a LISTEN connection is up: PostgreSQL notifies
'sensor_registry_changed' on every rename, delete or truncate of sensors (a trigger), and
each notification drops the whole cache. If the listener connection is lost, lookups go to
the database until it is back. Entries also expire after ENTRY_TTL_SECONDS, a bound on
staleness should a notification ever be missed. Only names that exist are cached, so a new
sensor is visible at once.

A lookup that raced with a change (the cache was dropped while its query ran) is not
stored: a generation counter tells.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final
from uuid import UUID

import asyncpg

from app.sensors import repository
from app.sensors.exceptions import SensorNotFound

logger = logging.getLogger(__name__)

CHANNEL: Final = "sensor_registry_changed"
ENTRY_TTL_SECONDS: Final = 30.0
MAX_ENTRIES: Final = 100_000
RECONNECT_SECONDS: Final = 2.0


class SensorDirectory:
    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self._dsn = dsn
        self._entries: dict[str, tuple[UUID, float]] = {}
        self._generation = 0
        self._listener: asyncpg.Connection | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def live(self) -> bool:
        """Whether cached entries may be served (the listener is connected)."""
        return self._listener is not None and not self._listener.is_closed()

    async def start(self) -> None:
        try:
            await self._listen()
        except (OSError, asyncpg.PostgresError) as error:
            logger.warning("sensor name cache off until LISTEN works: %s", error)
            self._schedule_reconnect()

    async def uuid_of(self, sensor_name: str) -> UUID:
        entry = self._entries.get(sensor_name)
        if entry is not None and self.live and time.monotonic() - entry[1] < ENTRY_TTL_SECONDS:
            return entry[0]
        generation = self._generation
        async with self._pool.acquire() as connection:
            record = await repository.fetch_by_name(connection, sensor_name)
        if record is None:
            raise SensorNotFound(sensor_name)
        sensor_uuid: UUID = record["sensor_uuid"]
        if self.live and generation == self._generation:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[sensor_name] = (sensor_uuid, time.monotonic())
        return sensor_uuid

    def invalidate(self) -> None:
        self._generation += 1
        self._entries.clear()

    async def close(self) -> None:
        self._closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        if self._listener is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await self._listener.close(timeout=2)
        self.invalidate()

    async def _listen(self) -> None:
        connection = await asyncpg.connect(self._dsn, timeout=10)
        connection.add_termination_listener(self._on_lost)
        await connection.add_listener(CHANNEL, self._on_change)
        # Anything cached before this connection listened may have missed a change.
        self.invalidate()
        self._listener = connection

    def _on_change(self, *_: object) -> None:
        self.invalidate()

    def _on_lost(self, *_: object) -> None:
        self._listener = None
        self.invalidate()
        if not self._closed:
            logger.warning("sensor name cache off: its LISTEN connection was lost")
            self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._reconnect is None or self._reconnect.done():
            self._reconnect = asyncio.create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        while not self._closed and not self.live:
            await asyncio.sleep(RECONNECT_SECONDS)
            try:
                await self._listen()
                logger.info("sensor name cache on again")
            except (OSError, asyncpg.PostgresError):
                continue
