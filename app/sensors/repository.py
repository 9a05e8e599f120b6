"""SQL of the sensor registry (metadata database) and its stats (timeseries database)."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from app.core.db import Connection


async def fetch_by_name(connection: Connection, sensor_name: str) -> asyncpg.Record | None:
    return await connection.fetchrow(
        "SELECT sensor_name, sensor_uuid FROM sensors WHERE sensor_name = $1", sensor_name
    )


async def list_by_name(
    connection: Connection, *, prefix: str | None, after: str | None, limit: int
) -> list[asyncpg.Record]:
    """Sensors in name order; `after` is the last name of the previous page."""
    pattern = None
    if prefix:
        # LIKE metacharacters in the prefix are literal (served by text_pattern_ops).
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"{escaped}%"
    return await connection.fetch(
        """
        SELECT sensor_name, sensor_uuid FROM sensors
        WHERE ($1::text IS NULL OR sensor_name LIKE $1)
          AND ($2::text IS NULL OR sensor_name > $2)
        ORDER BY sensor_name
        LIMIT $3
        """,
        pattern,
        after,
        limit,
    )


async def fetch_stats(
    connection: Connection, sensor_uuids: list[UUID]
) -> dict[UUID, asyncpg.Record]:
    rows = await connection.fetch(
        """
        SELECT sensor_uuid, first_ts, last_ts, reading_count FROM sensor_stats
        WHERE sensor_uuid = ANY($1::uuid[])
        """,
        sensor_uuids,
    )
    return {row["sensor_uuid"]: row for row in rows}
