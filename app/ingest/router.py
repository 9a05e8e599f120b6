from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, Query, Response, status

from app.core.deps import MetaConn, ResourcesDep
from app.core.errors import InvalidInput, error_responses
from app.ingest import service
from app.ingest.schemas import TimeseriesIngestRequest
from app.jobs.exceptions import JobAlreadyFinished, JobAlreadyRunning, JobNotFound
from app.jobs.schemas import Job, JobPage

router = APIRouter(prefix="/ingest", tags=["ingestion"])


def _accepted(response: Response, job_id: UUID) -> None:
    response.status_code = status.HTTP_202_ACCEPTED
    response.headers["Location"] = f"/ingest/jobs/{job_id}"


@router.post(
    "/mapping",
    response_model=Job,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(JobAlreadyRunning),
)
async def ingest_mapping(resources: ResourcesDep, connection: MetaConn, response: Response) -> Job:
    """Start loading MAPPING_KEY into the sensor registry; poll the job at Location."""
    job_id = await service.start_mapping_job(resources)
    _accepted(response, job_id)
    return await service.get_ingest_job(connection, job_id)


@router.post(
    "/timeseries",
    response_model=Job,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(JobAlreadyRunning, InvalidInput),
)
async def ingest_timeseries(
    resources: ResourcesDep,
    connection: MetaConn,
    response: Response,
    request: Annotated[TimeseriesIngestRequest | None, Body()] = None,
) -> Job:
    """Start loading every .csv / .csv.gz under the prefix; poll the job at Location."""
    job_id = await service.start_timeseries_job(resources, request or TimeseriesIngestRequest())
    _accepted(response, job_id)
    return await service.get_ingest_job(connection, job_id)


@router.get("/jobs", response_model=JobPage, responses=error_responses(InvalidInput))
async def list_jobs(
    connection: MetaConn,
    limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page.")] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> JobPage:
    """Ingestion jobs, newest first."""
    return await service.list_ingest_jobs(connection, cursor, limit)


@router.get("/jobs/{job_id}", response_model=Job, responses=error_responses(JobNotFound))
async def get_job(job_id: UUID, connection: MetaConn) -> Job:
    """One ingestion job with its progress and first errors."""
    return await service.get_ingest_job(connection, job_id)


@router.delete(
    "/jobs/{job_id}",
    response_model=Job,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(JobNotFound, JobAlreadyFinished),
)
async def cancel_job(job_id: UUID, resources: ResourcesDep, connection: MetaConn) -> Job:
    """Cancel a running job: it stops at the next batch boundary, keeping what it committed."""
    return await service.cancel_ingest_job(resources, connection, job_id)
