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
