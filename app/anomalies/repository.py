"""SQL of anomaly detection: a sensor's series (timeseries database) and fleet-scan
results (metadata database)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from app.core.db import Connection


async def copy_series(
    connection: Connection,
    *,
    sensor_uuid: UUID,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> bytes:
    """The range's (ts, value) rows as PostgreSQL binary COPY bytes, at most `limit` rows,
    in time order: an index-only scan whose bytes the analysis process parses itself."""
    chunks: list[bytes] = []

    async def collect(data: bytes) -> None:
        chunks.append(bytes(data))

    await connection.copy_from_query(
        """
        SELECT ts, value FROM readings
        WHERE sensor_uuid = $1
          AND ($2::timestamptz IS NULL OR ts >= $2)
          AND ($3::timestamptz IS NULL OR ts < $3)
        ORDER BY ts
        LIMIT $4
        """,
        sensor_uuid,
        start,
        end,
        limit,
        output=collect,
        format="binary",
    )
    return b"".join(chunks)


async def save_result(
    connection: Connection,
    *,
    job_id: UUID,
    sensor_uuid: UUID,
    sensor_name: str,
    points: int,
    anomaly_count: int,
    window_count: int,
    change_point_count: int,
    max_score: float,
    result: dict[str, Any],
) -> None:
    await connection.execute(
        """
        INSERT INTO anomaly_scan_results (job_id, sensor_uuid, sensor_name, points,
            anomaly_count, window_count, change_point_count, max_score, result)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (job_id, sensor_uuid) DO UPDATE SET
            sensor_name = EXCLUDED.sensor_name, points = EXCLUDED.points,
            anomaly_count = EXCLUDED.anomaly_count, window_count = EXCLUDED.window_count,
            change_point_count = EXCLUDED.change_point_count,
            max_score = EXCLUDED.max_score, result = EXCLUDED.result, analysed_at = now()
        """,
        job_id,
        sensor_uuid,
        sensor_name,
        points,
        anomaly_count,
        window_count,
        change_point_count,
        max_score,
        result,
    )


async def latest_scan_id(connection: Connection) -> UUID | None:
    """The newest scan that has results (a running scan's partial results count)."""
    job_id: UUID | None = await connection.fetchval(
        """
        SELECT id FROM jobs WHERE kind = 'anomaly_scan'
          AND status IN ('running', 'succeeded', 'completed_with_errors', 'cancelled')
        ORDER BY created_at DESC LIMIT 1
        """
    )
    return job_id


async def scan_totals(connection: Connection, job_id: UUID) -> asyncpg.Record:
    record = await connection.fetchrow(
        """
        SELECT count(*) AS analysed, count(*) FILTER (WHERE window_count > 0) AS with_anomalies
        FROM anomaly_scan_results WHERE job_id = $1
        """,
        job_id,
    )
    assert record is not None  # an aggregate without GROUP BY always has its row
    return record


async def ranked_results(
    connection: Connection, job_id: UUID, *, offset: int, limit: int
) -> list[asyncpg.Record]:
    """Most anomaly windows first, then the most severe, then by name."""
    return await connection.fetch(
        """
        SELECT sensor_name, sensor_uuid, points, anomaly_count, window_count,
               change_point_count, max_score, result -> 'window_kinds' AS window_kinds,
               result -> 'windows' AS windows, result -> 'change_points' AS change_points,
               result ->> 'first' AS first, result ->> 'last' AS last
        FROM anomaly_scan_results WHERE job_id = $1
        ORDER BY window_count DESC, max_score DESC, sensor_name
        OFFSET $2 LIMIT $3
        """,
        job_id,
        offset,
        limit,
    )
