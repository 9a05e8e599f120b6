from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from app.core.deps import ResourcesDep
from app.core.errors import InvalidInput, error_responses
from app.core.responses import JSONBytesResponse
from app.readings import live_writes, service
from app.readings.dependencies import QueryDep
from app.readings.exceptions import BatchTooLarge, InvalidBatch, UnsupportedBodyFormat
from app.readings.schemas import (
    AggregatePage,
    LiveReading,
    LiveWriteResult,
    ReadingFormat,
    ReadingsPage,
)
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
    service.check_json_range(resources.settings, query)
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
    service.check_json_range(resources.settings, query)
    page_body = await service.read_page(
        resources.timeseries_pool, query, limit=page_size or limit, cursor=cursor, page=page
    )
    return JSONBytesResponse(page_body)


LIVE_WRITE_DESCRIPTION = """
Store new readings, sent as one of (by `Content-Type`):

* `application/json`: an array of `{"sensor_name", "timestamp", "value"}` objects, or with
  `sensor_uuid` instead of `sensor_name`;
* `application/x-ndjson`: one such object per line;
* `text/csv`: the data-file format, `timestamp;sensor_uuid;sensor_value` with a header line
  (`,` delimiters and extra columns work, as for ingestion).

Readings are validated like ingested rows: a timestamp with an offset is that instant, a
naive one SOURCE_TIMEZONE local time (DST_AMBIGUOUS / DST_NONEXISTENT decide the DST hours);
the value must be a finite number; the sensor must exist and not be being deleted. A
(sensor, instant) already stored keeps its value and counts as `duplicate`, as do repeats
within the batch (the first one is written), so sending a batch again is harmless.

200: what was inserted, duplicate and rejected (`index` is the 0-based position in the
array, NDJSON line, or CSV line after the header), committed and visible to `GET /readings`.
422: the body is not JSON/NDJSON/CSV, holds no readings, or every reading was rejected
(`context.rejected`); nothing was written. 413: the body exceeds LIVE_WRITE_MAX_BYTES
(16 MiB by default) or LIVE_WRITE_MAX_ROWS readings (100,000). 415: another Content-Type.
"""

_LIVE_READING_SCHEMA = LiveReading.model_json_schema()


@router.post(
    "",
    response_model=LiveWriteResult,
    responses=error_responses(InvalidBatch, BatchTooLarge, UnsupportedBodyFormat),
    description=LIVE_WRITE_DESCRIPTION,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "array", "items": _LIVE_READING_SCHEMA},
                    "example": [
                        {
                            "sensor_name": "sensor_a",
                            "timestamp": "2016-01-01T12:00:00+01:00",
                            "value": 21.5,
                        },
                        {
                            "sensor_uuid": "00000000-0000-0000-0000-000000000001",
                            "timestamp": "2016-01-01 12:15:00",
                            "value": 21.75,
                        },
                    ],
                },
                "application/x-ndjson": {
                    "schema": {"type": "string", "description": "One JSON object a line."},
                    "example": (
                        '{"sensor_name": "sensor_a", "timestamp": "2016-01-01T12:00:00Z", '
                        '"value": 21.5}\n'
                    ),
                },
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": (
                        "timestamp;sensor_uuid;sensor_value\n"
                        "2016-01-01T12:00:00+01:00;00000000-0000-0000-0000-000000000001;21.5\n"
                    ),
                },
            },
        }
    },
)
async def post_readings(request: Request, resources: ResourcesDep) -> LiveWriteResult:
    """Store a batch of new readings (JSON, NDJSON or CSV); idempotent per sensor and time."""
    return await live_writes.write_readings(
        resources,
        content_type=request.headers.get("content-type"),
        content_length=request.headers.get("content-length"),
        body=request.stream(),
    )
