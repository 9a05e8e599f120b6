"""SQL of the jobs table (metadata database)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from app.core.db import Connection
from app.jobs.schemas import JobError, JobKind, JobStatus

JOB_COLUMNS = """
    id, kind, status, params, objects_total, objects_done, bytes_total, bytes_done,
    rows_read, rows_inserted, rows_duplicate, rows_rejected, result, failure_reason,
    cancel_requested, rejected_rows_key, created_at, started_at, finished_at, heartbeat_at
"""
MAX_REPORTED_ERRORS = 100


@dataclass
class JobCounters:
    objects_total: int = 0
    objects_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    rows_read: int = 0
    rows_inserted: int = 0
    rows_duplicate: int = 0
    rows_rejected: int = 0


async def insert_running_job(
    connection: Connection, job_id: UUID, kind: JobKind, params: dict[str, Any], worker_id: str
) -> None:
    await connection.execute(
        """
        INSERT INTO jobs (id, kind, status, params, worker_id, started_at, heartbeat_at)
        VALUES ($1, $2, 'running', $3, $4, now(), now())
        """,
        job_id,
        kind.value,
        params,
        worker_id,
    )


async def fetch_job(connection: Connection, job_id: UUID) -> asyncpg.Record | None:
    return await connection.fetchrow(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1",  # noqa: S608 - constant columns
        job_id,
    )


async def fetch_errors(connection: Connection, job_ids: list[UUID]) -> dict[UUID, list[JobError]]:
    rows = await connection.fetch(
        """
        SELECT job_id, object_key, line_number, reason FROM job_errors
        WHERE job_id = ANY($1::uuid[]) ORDER BY job_id, seq
        """,
        job_ids,
    )
    errors: dict[UUID, list[JobError]] = {job_id: [] for job_id in job_ids}
    for row in rows:
        errors[row["job_id"]].append(
            JobError(
                object_key=row["object_key"], line_number=row["line_number"], reason=row["reason"]
            )
        )
    return errors


async def list_jobs(
    connection: Connection,
    *,
    kinds: list[JobKind],
    before: tuple[datetime, UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Newest first; `before` is the (created_at, id) of the last job of the previous page."""
    return await connection.fetch(
        f"""
        SELECT {JOB_COLUMNS} FROM jobs
        WHERE kind = ANY($1::text[])
          AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
        ORDER BY created_at DESC, id DESC
        LIMIT $4
        """,  # noqa: S608 - the only interpolation is the constant column list
        [kind.value for kind in kinds],
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )


async def active_job_id(connection: Connection, kind: JobKind) -> UUID | None:
    job_id: UUID | None = await connection.fetchval(
        "SELECT id FROM jobs WHERE kind = $1 AND status IN ('queued', 'running')", kind.value
    )
    return job_id


async def fail_abandoned_jobs(connection: Connection, kind: JobKind, reason: str) -> list[UUID]:
    """Mark failed the jobs of `kind` still 'running' whose process is gone.

    Only called while holding the kind's advisory lock: no live process can own them then.
    """
    rows = await connection.fetch(
        """
        UPDATE jobs SET status = 'failed', failure_reason = $2, finished_at = now()
        WHERE kind = $1 AND status IN ('queued', 'running')
        RETURNING id
        """,
        kind.value,
        reason,
    )
    return [row["id"] for row in rows]


async def save_progress(
    connection: Connection,
    job_id: UUID,
    counters: JobCounters,
    result: dict[str, Any],
    new_errors: list[JobError],
    first_error_seq: int,
) -> bool:
    """Store the counters and heartbeat; return whether cancellation was requested."""
    async with connection.transaction():
        cancel_requested: bool = await connection.fetchval(
            """
            UPDATE jobs SET
                objects_total = $2, objects_done = $3, bytes_total = $4, bytes_done = $5,
                rows_read = $6, rows_inserted = $7, rows_duplicate = $8, rows_rejected = $9,
                result = $10, heartbeat_at = now()
            WHERE id = $1
            RETURNING cancel_requested
            """,
            job_id,
            counters.objects_total,
            counters.objects_done,
            counters.bytes_total,
            counters.bytes_done,
            counters.rows_read,
            counters.rows_inserted,
            counters.rows_duplicate,
            counters.rows_rejected,
            result,
        )
        if new_errors:
            await connection.executemany(
                """
                INSERT INTO job_errors (job_id, seq, object_key, line_number, reason)
                VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING
                """,
                [
                    (job_id, first_error_seq + offset, e.object_key, e.line_number, e.reason)
                    for offset, e in enumerate(new_errors)
                ],
            )
    return cancel_requested


async def finish_job(
    connection: Connection,
    job_id: UUID,
    status: JobStatus,
    failure_reason: str | None,
    rejected_rows_key: str | None,
) -> None:
    await connection.execute(
        """
        UPDATE jobs SET status = $2, failure_reason = $3, rejected_rows_key = $4,
                        finished_at = now(), heartbeat_at = now()
        WHERE id = $1
        """,
        job_id,
        status.value,
        failure_reason,
        rejected_rows_key,
    )


async def request_cancel(connection: Connection, job_id: UUID) -> asyncpg.Record | None:
    return await connection.fetchrow(
        """
        UPDATE jobs SET cancel_requested = true
        WHERE id = $1 AND status IN ('queued', 'running')
        RETURNING id
        """,
        job_id,
    )


async def count_by_kind_and_status(connection: Connection) -> list[asyncpg.Record]:
    """(kind, status, jobs) for every pair that has at least one job."""
    return await connection.fetch(
        "SELECT kind, status, count(*) AS jobs FROM jobs GROUP BY kind, status"
    )
