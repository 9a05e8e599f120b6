from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field


class Sensor(BaseModel):
    name: str
    uuid: UUID
    first_timestamp: datetime | None = Field(description="First stored reading (UTC).")
    last_timestamp: datetime | None = Field(description="Last stored reading (UTC).")
    reading_count: int = Field(description="Stored readings.")


class SensorPage(BaseModel):
    items: list[Sensor]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
    has_more: bool = Field(description="Whether more sensors match than this page holds.")
