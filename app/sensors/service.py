from __future__ import annotations

import asyncpg

from app.core.db import Connection
from app.core.pagination import decode_cursor, encode_cursor
from app.sensors import repository
from app.sensors.exceptions import SensorNotFound
from app.sensors.schemas import Sensor, SensorPage


def _sensor(record: asyncpg.Record, stats: asyncpg.Record | None) -> Sensor:
    return Sensor(
        name=record["sensor_name"],
        uuid=record["sensor_uuid"],
        first_timestamp=stats["first_ts"] if stats else None,
        last_timestamp=stats["last_ts"] if stats else None,
        reading_count=stats["reading_count"] if stats else 0,
    )


async def sensor_by_name(metadata: Connection, sensor_name: str) -> asyncpg.Record:
    record = await repository.fetch_by_name(metadata, sensor_name)
    if record is None:
        raise SensorNotFound(sensor_name)
    return record


async def get_sensor(metadata: Connection, timeseries: Connection, sensor_name: str) -> Sensor:
    record = await sensor_by_name(metadata, sensor_name)
    stats = await repository.fetch_stats(timeseries, [record["sensor_uuid"]])
    return _sensor(record, stats.get(record["sensor_uuid"]))


async def list_sensors(
    metadata: Connection,
    timeseries: Connection,
    *,
    prefix: str | None,
    cursor: str | None,
    limit: int,
) -> SensorPage:
    after = decode_cursor(cursor, {"name"})["name"] if cursor else None
    records = await repository.list_by_name(metadata, prefix=prefix, after=after, limit=limit + 1)
    has_more = len(records) > limit
    records = records[:limit]
    stats = await repository.fetch_stats(timeseries, [r["sensor_uuid"] for r in records])
    items = [_sensor(record, stats.get(record["sensor_uuid"])) for record in records]
    next_cursor = encode_cursor({"name": records[-1]["sensor_name"]}) if has_more else None
    return SensorPage(items=items, next_cursor=next_cursor, has_more=has_more)
