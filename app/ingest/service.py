"""Ingestion jobs: start, list, read and cancel them."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from app.core.db import Connection
from app.core.lifespan import Resources
from app.core.pagination import decode_cursor, encode_cursor
from app.ingest.mapping_loader import load_mapping
from app.ingest.schemas import TimeseriesIngestRequest
from app.ingest.timeseries_loader import TimeseriesLoader
from app.jobs import repository as jobs_repository
from app.jobs.exceptions import JobNotFound
from app.jobs.schemas import Job, JobKind, JobPage
from app.jobs.service import JobContext, get_job, job_from_record

INGEST_KINDS = [JobKind.INGEST_MAPPING, JobKind.INGEST_TIMESERIES]


async def start_mapping_job(resources: Resources) -> UUID:
    async def work(context: JobContext) -> None:
        await load_mapping(context, resources)

    params = {"mapping_key": resources.settings.mapping_key}
    return await resources.jobs.start(JobKind.INGEST_MAPPING, params, work)


async def start_timeseries_job(resources: Resources, request: TimeseriesIngestRequest) -> UUID:
    async def work(context: JobContext) -> None:
        await TimeseriesLoader(context, resources, request).run()

    params = request.model_dump(exclude_none=True)
    return await resources.jobs.start(JobKind.INGEST_TIMESERIES, params, work)


async def get_ingest_job(connection: Connection, job_id: UUID) -> Job:
    job = await get_job(connection, job_id)
    if job.kind not in INGEST_KINDS:
        raise JobNotFound(job_id)
    return job


async def list_ingest_jobs(connection: Connection, cursor: str | None, limit: int) -> JobPage:
    before = None
    if cursor is not None:
        position = decode_cursor(cursor, {"created_at", "id"})
        before = (datetime.fromisoformat(position["created_at"]), UUID(position["id"]))
    records = await jobs_repository.list_jobs(
        connection, kinds=INGEST_KINDS, before=before, limit=limit + 1
    )
    has_more = len(records) > limit
    records = records[:limit]
    errors = await jobs_repository.fetch_errors(connection, [r["id"] for r in records])
    items = [job_from_record(record, errors[record["id"]]) for record in records]
    next_cursor = None
    if has_more:
        last = records[-1]
        next_cursor = encode_cursor(
            {"created_at": last["created_at"].isoformat(), "id": str(last["id"])}
        )
    return JobPage(items=items, next_cursor=next_cursor, has_more=has_more)


async def cancel_ingest_job(resources: Resources, connection: Connection, job_id: UUID) -> Job:
    await get_ingest_job(connection, job_id)
    await resources.jobs.cancel(job_id)
    return await get_ingest_job(connection, job_id)
