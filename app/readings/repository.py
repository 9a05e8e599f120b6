"""SQL of readings (timeseries database)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from app.core.db import READINGS_DELETE_LOCK_KEY, Connection, CopySink


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
    # A stream lasts as long as its client takes to read it (the COPY waits on a bounded
    # queue), so the statement timeout meant for runaway queries does not apply.
    await connection.execute(
        "SELECT set_config('timezone', $1, true), set_config('statement_timeout', '0', true)", tz
    )
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


# --- live writes (POST /readings) ----------------------------------------------------------


async def fetch_writable_sensors(
    connection: Connection, names: Sequence[str], uuids: Sequence[UUID]
) -> list[asyncpg.Record]:
    """Metadata database: the sensors named in `names` or `uuids` that readings may be
    written for, in uuid order; a sensor being deleted (deleting_since set) counts as
    unknown."""
    return await connection.fetch(
        """
        SELECT sensor_name, sensor_uuid FROM sensors
        WHERE (sensor_name = ANY($1::text[]) OR sensor_uuid = ANY($2::uuid[]))
          AND deleting_since IS NULL
        ORDER BY sensor_uuid
        """,
        names,
        uuids,
    )


async def hold_off_sensor_deletion(connection: Connection) -> None:
    """The writer's side of the deletion protocol (db_init/timeseries/0004): held shared
    until the transaction ends, so no deletion commits between our check and our insert."""
    await connection.execute("SELECT pg_advisory_xact_lock_shared($1)", READINGS_DELETE_LOCK_KEY)


async def deleted_sensor_uuids(connection: Connection, uuids: Sequence[UUID]) -> set[UUID]:
    rows = await connection.fetch(
        "SELECT sensor_uuid FROM deleted_sensors WHERE sensor_uuid = ANY($1::uuid[])", uuids
    )
    return {row["sensor_uuid"] for row in rows}
