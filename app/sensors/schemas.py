from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

# No leading or trailing blanks, no control characters, no "/" (GET /sensors/{name} could
# not address it).
NAME_PATTERN = r"^[^\s\x00-\x1f\x7f/](?:[^\x00-\x1f\x7f/]*[^\s\x00-\x1f\x7f/])?$"
Name = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)
# PostgreSQL text cannot hold NUL.
TEXT_PATTERN = r"^[^\x00]*$"


class Sensor(BaseModel):
    name: str
    uuid: UUID
    type: str | None = Field(description="What it measures, e.g. temperature.")
    unit: str | None = Field(description="Unit of its values, e.g. degC.")
    location: str | None
    active: bool
    created_at: datetime
    updated_at: datetime
    updated_by: str | None = Field(description="Who changed it last (the API key's label).")
    first_timestamp: datetime | None = Field(description="First stored reading (UTC).")
    last_timestamp: datetime | None = Field(description="Last stored reading (UTC).")
    reading_count: int = Field(description="Stored readings.")


class SensorPage(BaseModel):
    items: list[Sensor]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
    has_more: bool = Field(description="Whether more sensors match than this page holds.")


class SensorCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Name
    uuid: UUID | None = Field(default=None, description="Generated when absent.")
    type: str | None = Field(default=None, max_length=100, pattern=TEXT_PATTERN)
    unit: str | None = Field(default=None, max_length=50, pattern=TEXT_PATTERN)
    location: str | None = Field(default=None, max_length=200, pattern=TEXT_PATTERN)
    active: bool = True


class SensorPatch(BaseModel):
    """Only the fields given change; `null` clears type, unit or location."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=NAME_PATTERN, description="Rename."
    )
    type: str | None = Field(default=None, max_length=100, pattern=TEXT_PATTERN)
    unit: str | None = Field(default=None, max_length=50, pattern=TEXT_PATTERN)
    location: str | None = Field(default=None, max_length=200, pattern=TEXT_PATTERN)
    active: bool | None = None


class SensorDeleted(BaseModel):
    name: str
    uuid: UUID
    readings_deleted: int = Field(description="Readings removed with it (0 on a re-run).")
