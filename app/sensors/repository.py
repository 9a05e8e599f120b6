"""SQL of the sensor registry (metadata database) and of what deleting a sensor removes in
the timeseries database."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from app.core.db import READINGS_DELETE_LOCK_KEY, Connection

SENSOR_COLUMNS = """
    sensor_name, sensor_uuid, sensor_type, unit, location, active,
    created_at, updated_at, updated_by
"""
# Columns PATCH may set, by their API names.
EDITABLE = {
    "name": "sensor_name",
    "type": "sensor_type",
    "unit": "unit",
    "location": "location",
    "active": "active",
}


def _prefix_pattern(prefix: str | None) -> str | None:
    if not prefix:
        return None
    # LIKE metacharacters in the prefix are literal (served by text_pattern_ops).
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


# --- metadata database -------------------------------------------------------------------


async def fetch_by_name(connection: Connection, sensor_name: str) -> asyncpg.Record | None:
    """A sensor that is not being deleted."""
    return await connection.fetchrow(
        f"""
        SELECT {SENSOR_COLUMNS} FROM sensors
        WHERE sensor_name = $1 AND deleting_since IS NULL
        """,  # noqa: S608 - a constant column list
        sensor_name,
    )


async def list_by_name(
    connection: Connection,
    *,
    prefix: str | None,
    after: str | None,
    limit: int,
    location: str | None = None,
    sensor_type: str | None = None,
    active: bool | None = None,
) -> list[asyncpg.Record]:
    """Sensors in name order; `after` is the last name of the previous page."""
    return await connection.fetch(
        f"""
        SELECT {SENSOR_COLUMNS} FROM sensors
        WHERE deleting_since IS NULL
          AND ($1::text IS NULL OR sensor_name LIKE $1)
          AND ($2::text IS NULL OR sensor_name > $2)
          AND ($4::text IS NULL OR location = $4)
          AND ($5::text IS NULL OR sensor_type = $5)
          AND ($6::boolean IS NULL OR active = $6)
        ORDER BY sensor_name
        LIMIT $3
        """,  # noqa: S608 - a constant column list
        _prefix_pattern(prefix),
        after,
        limit,
        location,
        sensor_type,
        active,
    )


async def insert_sensor(
    connection: Connection,
    *,
    sensor_uuid: UUID,
    name: str,
    sensor_type: str | None,
    unit: str | None,
    location: str | None,
    active: bool,
    updated_by: str | None,
) -> asyncpg.Record:
    """Raises UniqueViolationError when the name or the uuid is taken."""
    record = await connection.fetchrow(
        f"""
        INSERT INTO sensors (sensor_uuid, sensor_name, sensor_type, unit, location, active,
                             updated_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        RETURNING {SENSOR_COLUMNS}
        """,  # noqa: S608 - a constant column list
        sensor_uuid,
        name,
        sensor_type,
        unit,
        location,
        active,
        updated_by,
    )
    assert record is not None
    return record


async def owner_of(
    connection: Connection, *, name: str, sensor_uuid: UUID
) -> asyncpg.Record | None:
    """The sensor (deleting or not) that holds this name or this uuid."""
    return await connection.fetchrow(
        """
        SELECT sensor_name, sensor_uuid, deleting_since FROM sensors
        WHERE sensor_name = $1 OR sensor_uuid = $2
        LIMIT 1
        """,
        name,
        sensor_uuid,
    )


async def update_sensor(
    connection: Connection, sensor_name: str, changes: dict[str, Any], updated_by: str | None
) -> asyncpg.Record | None:
    """Sets the given API fields; None when there is no such (live) sensor. Raises
    UniqueViolationError on a rename to a taken name."""
    assignments = [f"{EDITABLE[field]} = ${n}" for n, field in enumerate(changes, start=3)]
    return await connection.fetchrow(
        f"""
        UPDATE sensors SET {", ".join([*assignments, "updated_at = now()", "updated_by = $2"])}
        WHERE sensor_name = $1 AND deleting_since IS NULL
        RETURNING {SENSOR_COLUMNS}
        """,  # noqa: S608 - column names come from EDITABLE, values are parameters
        sensor_name,
        updated_by,
        *changes.values(),
    )


async def mark_deleting(connection: Connection, sensor_name: str) -> UUID | None:
    """Step 1 of a delete: the sensor disappears for readers and writers. Idempotent: a
    sensor already marked (an interrupted delete) is returned again."""
    sensor_uuid: UUID | None = await connection.fetchval(
        """
        UPDATE sensors SET deleting_since = coalesce(deleting_since, now())
        WHERE sensor_name = $1
        RETURNING sensor_uuid
        """,
        sensor_name,
    )
    return sensor_uuid


async def pending_deletes(connection: Connection) -> list[asyncpg.Record]:
    return await connection.fetch(
        "SELECT sensor_name, sensor_uuid FROM sensors WHERE deleting_since IS NOT NULL"
    )


async def remove_sensor(connection: Connection, sensor_uuid: UUID) -> None:
    """Step 3 of a delete (after its readings are gone)."""
    await connection.execute(
        "DELETE FROM sensors WHERE sensor_uuid = $1 AND deleting_since IS NOT NULL", sensor_uuid
    )


# --- timeseries database -----------------------------------------------------------------


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


async def delete_readings(connection: Connection, sensor_uuid: UUID) -> int:
    """Step 2 of a delete, in the caller's transaction: with every writer of readings held
    off (the exclusive side of READINGS_DELETE_LOCK_KEY), the uuid is recorded as deleted,
    so that writes after this transaction drop its rows, and its readings and summary go.
    Idempotent."""
    await connection.execute("SELECT pg_advisory_xact_lock($1)", READINGS_DELETE_LOCK_KEY)
    await connection.execute(
        "INSERT INTO deleted_sensors (sensor_uuid) VALUES ($1) ON CONFLICT DO NOTHING",
        sensor_uuid,
    )
    status = await connection.execute("DELETE FROM readings WHERE sensor_uuid = $1", sensor_uuid)
    await connection.execute("DELETE FROM sensor_stats WHERE sensor_uuid = $1", sensor_uuid)
    return int(status.rsplit(" ", 1)[1])


async def forget_deletion(connection: Connection, sensor_uuid: UUID) -> None:
    """A uuid registered again may receive readings again."""
    await connection.execute("DELETE FROM deleted_sensors WHERE sensor_uuid = $1", sensor_uuid)
