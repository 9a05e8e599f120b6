"""SQL of ingestion: the object ledger, readings COPY, rejected rows, the mapping merge."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from app.core.db import Connection, CopySink

READING_COLUMNS = ("ts", "sensor_uuid", "value")


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    yield payload


# --- metadata database -------------------------------------------------------------------


async def known_sensor_uuids(connection: Connection) -> list[str]:
    rows = await connection.fetch("SELECT sensor_uuid::text AS sensor_uuid FROM sensors")
    return [row["sensor_uuid"] for row in rows]


async def create_mapping_staging(connection: Connection) -> None:
    await connection.execute(
        """
        CREATE TEMP TABLE mapping_incoming (
            line_number bigint NOT NULL,
            sensor_name text   NOT NULL,
            sensor_uuid uuid   NOT NULL,
            raw_line    text   NOT NULL
        ) ON COMMIT DROP
        """
    )


async def copy_mapping_rows(
    connection: Connection, rows: Sequence[tuple[int, str, UUID, str]]
) -> None:
    await connection.copy_records_to_table(
        "mapping_incoming",
        records=rows,
        columns=("line_number", "sensor_name", "sensor_uuid", "raw_line"),
    )


async def mapping_conflicts(connection: Connection) -> list[asyncpg.Record]:
    """Rows that contradict another row of the file or the registry, with the reason."""
    return await connection.fetch(
        """
        WITH name_in_file AS (
            SELECT sensor_name FROM mapping_incoming
            GROUP BY sensor_name HAVING count(DISTINCT sensor_uuid) > 1
        ), uuid_in_file AS (
            SELECT sensor_uuid FROM mapping_incoming
            GROUP BY sensor_uuid HAVING count(DISTINCT sensor_name) > 1
        )
        SELECT i.line_number, i.raw_line,
               CASE
                 WHEN i.sensor_name IN (SELECT sensor_name FROM name_in_file)
                   THEN format('conflict: sensor_name %s has several uuids in this file',
                               i.sensor_name)
                 WHEN i.sensor_uuid IN (SELECT sensor_uuid FROM uuid_in_file)
                   THEN format('conflict: sensor_uuid %s has several names in this file',
                               i.sensor_uuid)
                 WHEN by_name.sensor_uuid IS NOT NULL
                   THEN format('conflict: sensor_name %s is registered with uuid %s',
                               i.sensor_name, by_name.sensor_uuid)
                 ELSE format('conflict: sensor_uuid %s is registered as %s',
                             i.sensor_uuid, by_uuid.sensor_name)
               END AS reason
        FROM mapping_incoming i
        LEFT JOIN sensors by_name
               ON by_name.sensor_name = i.sensor_name AND by_name.sensor_uuid <> i.sensor_uuid
        LEFT JOIN sensors by_uuid
               ON by_uuid.sensor_uuid = i.sensor_uuid AND by_uuid.sensor_name <> i.sensor_name
        WHERE i.sensor_name IN (SELECT sensor_name FROM name_in_file)
           OR i.sensor_uuid IN (SELECT sensor_uuid FROM uuid_in_file)
           OR by_name.sensor_uuid IS NOT NULL
           OR by_uuid.sensor_name IS NOT NULL
        ORDER BY i.line_number
        """
    )


async def merge_mapping(connection: Connection, rejected_lines: list[int]) -> tuple[int, int]:
    """Insert the new (name, uuid) pairs; return (inserted, already registered or repeated)."""
    accepted = await connection.fetchval(
        "SELECT count(*) FROM mapping_incoming WHERE NOT (line_number = ANY($1::bigint[]))",
        rejected_lines,
    )
    status = await connection.execute(
        """
        INSERT INTO sensors (sensor_uuid, sensor_name)
        SELECT DISTINCT sensor_uuid, sensor_name FROM mapping_incoming
        WHERE NOT (line_number = ANY($1::bigint[]))
        ON CONFLICT DO NOTHING
        """,
        rejected_lines,
    )
    inserted = int(status.rsplit(" ", 1)[1])
    return inserted, int(accepted) - inserted


# --- timeseries database -----------------------------------------------------------------


async def fetch_ledger(connection: Connection, keys: list[str]) -> dict[str, tuple[str, int]]:
    rows = await connection.fetch(
        "SELECT object_key, etag, size_bytes FROM ingested_objects WHERE object_key = ANY($1)",
        keys,
    )
    return {row["object_key"]: (row["etag"], row["size_bytes"]) for row in rows}


async def record_object(
    connection: Connection,
    *,
    key: str,
    etag: str,
    size: int,
    job_id: UUID,
    outcome: str,
    rows_read: int,
    rows_inserted: int,
    rows_duplicate: int,
    rows_rejected: int,
) -> None:
    await connection.execute(
        """
        INSERT INTO ingested_objects (object_key, etag, size_bytes, job_id, outcome, rows_read,
                                      rows_inserted, rows_duplicate, rows_rejected)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (object_key) DO UPDATE SET
            etag = EXCLUDED.etag, size_bytes = EXCLUDED.size_bytes, job_id = EXCLUDED.job_id,
            outcome = EXCLUDED.outcome, rows_read = EXCLUDED.rows_read,
            rows_inserted = EXCLUDED.rows_inserted, rows_duplicate = EXCLUDED.rows_duplicate,
            rows_rejected = EXCLUDED.rows_rejected, loaded_at = now()
        """,
        key,
        etag,
        size,
        job_id,
        outcome,
        rows_read,
        rows_inserted,
        rows_duplicate,
        rows_rejected,
    )


async def ensure_partitions(connection: Connection, lower: datetime, upper: datetime) -> int:
    created: int = await connection.fetchval(
        "SELECT ensure_readings_partitions($1, $2)", lower, upper
    )
    return created


async def readings_storage(connection: Connection) -> str:
    storage: str = await connection.fetchval("SELECT readings_storage()")
    return storage


async def copy_readings(connection: Connection, payload: bytes) -> None:
    """Binary COPY straight into readings; raises UniqueViolationError on any stored pair."""
    await connection.copy_to_table(
        "readings", source=_once(payload), columns=READING_COLUMNS, format="binary"
    )


async def merge_readings(connection: Connection, payload: bytes) -> list[asyncpg.Record]:
    """The slow path for a batch that overlaps stored readings: stage it, then insert what
    is new. Stored values win. Returns (sensor_uuid, count, first_ts, last_ts) of what was
    inserted."""
    await connection.execute(
        """
        CREATE TEMP TABLE IF NOT EXISTS readings_incoming
            (ts timestamptz, sensor_uuid uuid, value double precision)
        ON COMMIT DELETE ROWS
        """
    )
    await connection.execute("TRUNCATE readings_incoming")
    await connection.copy_to_table(
        "readings_incoming", source=_once(payload), columns=READING_COLUMNS, format="binary"
    )
    return await connection.fetch(
        """
        WITH inserted AS (
            INSERT INTO readings (ts, sensor_uuid, value)
            SELECT ts, sensor_uuid, value FROM readings_incoming
            ON CONFLICT (sensor_uuid, ts) DO NOTHING
            RETURNING sensor_uuid, ts
        )
        SELECT sensor_uuid, count(*) AS count, min(ts) AS first_ts, max(ts) AS last_ts
        FROM inserted GROUP BY sensor_uuid
        """
    )


async def add_to_sensor_stats(
    connection: Connection,
    rows: Sequence[tuple[UUID, datetime, datetime, int]],
) -> None:
    """(sensor_uuid, first_ts, last_ts, count) of readings just inserted. Rows are locked in
    uuid order so that concurrent loaders wait for each other instead of deadlocking."""
    ordered = sorted(rows)
    await connection.execute(
        """
        INSERT INTO sensor_stats AS s (sensor_uuid, first_ts, last_ts, reading_count)
        SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::bigint[])
        ON CONFLICT (sensor_uuid) DO UPDATE SET
            first_ts = least(s.first_ts, EXCLUDED.first_ts),
            last_ts = greatest(s.last_ts, EXCLUDED.last_ts),
            reading_count = s.reading_count + EXCLUDED.reading_count
        """,
        [row[0] for row in ordered],
        [row[1] for row in ordered],
        [row[2] for row in ordered],
        [row[3] for row in ordered],
    )


async def insert_rejections(
    connection: Connection, job_id: UUID, key: str, rejections: Sequence[tuple[int, str, str]]
) -> None:
    """(line number, reason, raw line) rows, committed with the object they belong to."""
    await connection.copy_records_to_table(
        "ingest_rejections",
        records=[(job_id, key, line, reason, raw) for line, reason, raw in rejections],
        columns=("job_id", "object_key", "line_number", "reason", "raw_line"),
    )


async def has_rejections(connection: Connection, job_id: UUID) -> bool:
    found: bool = await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM ingest_rejections WHERE job_id = $1)", job_id
    )
    return found


async def export_rejections(connection: Connection, job_id: UUID, output: CopySink) -> None:
    """Every rejected row of the job as CSV, written by PostgreSQL itself."""
    await connection.copy_from_query(
        """
        SELECT object_key, line_number, reason, raw_line FROM ingest_rejections
        WHERE job_id = $1 ORDER BY object_key, line_number
        """,
        job_id,
        output=output,
        format="csv",
        header=True,
    )
