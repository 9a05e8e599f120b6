"""SQL of readings (timeseries database)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from app.core.db import Connection, CopySink


async def fetch_page(
    connection: Connection,
    *,
    sensor_uuid: UUID,
    start: datetime,
    end: datetime,
    after: datetime | None,
    descending: bool,
    limit: int,
    offset: int = 0,
) -> list[asyncpg.Record]:
    """One page of a sensor's range: an index-only scan of (sensor_uuid, ts) INCLUDE (value).
    `after` is the last timestamp of the previous page (keyset), in the page's direction."""
    if descending:
        query = """
            SELECT ts, value FROM readings
            WHERE sensor_uuid = $1 AND ts >= $2 AND ts < $3 AND ($4::timestamptz IS NULL OR ts < $4)
            ORDER BY ts DESC LIMIT $5 OFFSET $6
        """
    else:
        query = """
            SELECT ts, value FROM readings
            WHERE sensor_uuid = $1 AND ts >= $2 AND ts < $3 AND ($4::timestamptz IS NULL OR ts > $4)
            ORDER BY ts LIMIT $5 OFFSET $6
        """
    return await connection.fetch(query, sensor_uuid, start, end, after, limit, offset)


async def copy_range(
    connection: Connection,
    *,
    sensor_uuid: UUID,
    start: datetime,
    end: datetime,
    descending: bool,
    tz: str,
    ndjson: bool,
    output: CopySink,
) -> None:
    """The whole range, formatted by PostgreSQL itself (COPY TO STDOUT): CSV with a header,
    or one JSON object a line. Timestamps are ISO 8601 with the offset of `tz`."""
    direction = "DESC" if descending else "ASC"
    # Rendering timestamptz uses the session time zone; LOCAL keeps it to this transaction.
    await connection.execute("SELECT set_config('timezone', $1, true)", tz)
    if ndjson:
        query = f"""
            SELECT json_build_object('timestamp', ts, 'value', value)::text FROM readings
            WHERE sensor_uuid = $1 AND ts >= $2 AND ts < $3 ORDER BY ts {direction}
        """  # noqa: S608 - direction is one of two constants
        await connection.copy_from_query(
            query, sensor_uuid, start, end, output=output, format="text"
        )
    else:
        query = f"""
            SELECT to_json(ts) #>> '{{}}' AS timestamp, value FROM readings
            WHERE sensor_uuid = $1 AND ts >= $2 AND ts < $3 ORDER BY ts {direction}
        """  # noqa: S608 - direction is one of two constants
        await connection.copy_from_query(
            query, sensor_uuid, start, end, output=output, format="csv", header=True
        )


async def readings_storage(connection: Connection) -> str:
    storage: str = await connection.fetchval("SELECT readings_storage()")
    return storage
