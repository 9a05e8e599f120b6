from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from app.core.deps import ResourcesDep
from app.core.errors import InvalidInput, error_responses
from app.core.responses import JSONBytesResponse
from app.readings import service
from app.readings.dependencies import QueryDep
from app.readings.schemas import AggregatePage, ReadingFormat, ReadingsPage
from app.readings.service import MAX_LIMIT
from app.sensors.exceptions import SensorNotFound

router = APIRouter(prefix="/readings", tags=["readings"])

MEDIA_TYPES = {
    ReadingFormat.CSV: "text/csv; charset=utf-8",
    ReadingFormat.NDJSON: "application/x-ndjson",
}


def negotiate_format(requested: ReadingFormat | None, accept: str | None) -> ReadingFormat:
    if requested is not None:
        return requested
    accept = (accept or "").lower()
    if "text/csv" in accept:
        return ReadingFormat.CSV
    if "ndjson" in accept:
        return ReadingFormat.NDJSON
    return ReadingFormat.JSON


@router.get(
    "/aggregate",
    response_model=AggregatePage,
    response_model_exclude_none=True,
    responses=error_responses(SensorNotFound, InvalidInput),
)
async def aggregate_readings(
    query: QueryDep,
    resources: ResourcesDep,
    interval: Annotated[
        str, Query(description="15m, 1h, 6h, 1d, 1w, 1mo ...: calendar buckets in tz.")
    ] = "1h",
    stats: Annotated[
        str, Query(description="Comma-separated: count,min,max,avg,stddev,p25,median,p75.")
    ] = "count,min,max,avg",
    fill: Annotated[
        str, Query(description="Empty buckets: none (omit), null, previous, linear.")
    ] = "none",
) -> AggregatePage:
    """Statistics of a sensor per calendar bucket of tz (a Berlin day is 23 or 25 h on DST days)."""
    return await service.aggregate(
        resources.timeseries_pool, query, interval=interval, stats=stats, fill=fill
    )


@router.get(
    "",
    response_model=ReadingsPage,
    responses={
        **error_responses(SensorNotFound, InvalidInput),
        200: {
            "description": "A page (JSON), or the whole range streamed (CSV, NDJSON).",
            "content": {"text/csv": {}, "application/x-ndjson": {}},
        },
    },
)
async def get_readings(
    query: QueryDep,
    resources: ResourcesDep,
    format: Annotated[
        ReadingFormat | None,
        Query(description="json pages; ndjson and csv stream the whole range (no limit)."),
    ] = None,
    accept: Annotated[str | None, Header()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Readings per page.")] = 1000,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
    page: Annotated[
        int | None,
        Query(
            ge=1,
            le=1_000_000,
            description="Page number (1-based) with limit as page size; "
            "slower than cursor for deep pages.",
        ),
    ] = None,
    page_size: Annotated[
        int | None, Query(ge=1, le=MAX_LIMIT, description="Alias of limit for page.")
    ] = None,
) -> JSONBytesResponse | StreamingResponse:
    """Readings of a sensor in [start, end): a page of JSON, or the whole range as CSV/NDJSON."""
    chosen = negotiate_format(format, accept)
    if chosen is not ReadingFormat.JSON:
        stream = service.stream_range(
            resources.timeseries_pool, query, ndjson=chosen is ReadingFormat.NDJSON
        )
        return StreamingResponse(stream, media_type=MEDIA_TYPES[chosen])
    page_body = await service.read_page(
        resources.timeseries_pool, query, limit=page_size or limit, cursor=cursor, page=page
    )
    return JSONBytesResponse(page_body)
