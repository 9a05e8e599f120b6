from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, Field


class Order(StrEnum):
    ASC = "asc"
    DESC = "desc"


class ReadingFormat(StrEnum):
    JSON = "json"
    NDJSON = "ndjson"
    CSV = "csv"


class Reading(BaseModel):
    timestamp: datetime = Field(description="ISO 8601 with the offset of the requested tz.")
    value: float


class ReadingsPage(BaseModel):
    sensor_name: str
    sensor_uuid: UUID
    start: datetime = Field(description="Inclusive.")
    end: datetime = Field(description="Exclusive.")
    order: Order
    tz: str
    items: list[Reading]
    count: int = Field(description="Readings in this page.")
    has_more: bool = Field(description="Whether the range holds more readings than this page.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class AggregateBucket(BaseModel):
    start: datetime = Field(description="Inclusive, at a calendar boundary of tz.")
    end: datetime = Field(description="Exclusive; the last bucket is cut at the query's end.")
    filled: bool = Field(description="Whether the values were filled (the bucket was empty).")
    count: int | None = None
    min: float | None = None
    max: float | None = None
    avg: float | None = None
    stddev: float | None = None
    p25: float | None = None
    median: float | None = None
    p75: float | None = None


class AggregatePage(BaseModel):
    sensor_name: str
    sensor_uuid: UUID
    start: datetime
    end: datetime
    interval: str
    tz: str
    stats: list[str]
    fill: str
    buckets: list[AggregateBucket]
    count: int = Field(description="Buckets returned; the whole range, never truncated.")
    has_more: bool = Field(default=False, description="Always false: aggregates are complete.")


# --- POST /readings ------------------------------------------------------------------------


class LiveReading(BaseModel):
    """One new reading: an item of the JSON array, or one line of NDJSON. Documentation
    only: the service validates a batch column by column, not through this model."""

    sensor_name: str | None = Field(default=None, description="Either this or sensor_uuid.")
    sensor_uuid: UUID | None = Field(default=None, description="Either this or sensor_name.")
    timestamp: str = Field(
        description="ISO 8601. With an offset or Z it is that instant; a naive time is "
        "SOURCE_TIMEZONE local time (DST_AMBIGUOUS / DST_NONEXISTENT decide the DST hours).",
        examples=["2016-01-01T12:00:00+01:00"],
    )
    value: float = Field(description="A finite number (not a string, not a boolean).")


class RejectedReading(BaseModel):
    index: int = Field(
        description="0-based: position in the JSON array, NDJSON line number - 1, or CSV "
        "line number after the header - 1."
    )
    reason: str


class LiveWriteResult(BaseModel):
    inserted: int = Field(description="Readings stored by this request.")
    duplicate: int = Field(
        description="Readings of a (sensor, instant) already stored, or repeated in this "
        "batch (the first one counts); the stored value is kept."
    )
    rejected: list[RejectedReading] = Field(
        description="Rejected readings in index order, at most the first 1000."
    )
    rejected_count: int = Field(description="All rejected readings, listed or not.")
