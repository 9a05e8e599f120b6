from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field, computed_field


class JobKind(StrEnum):
    INGEST_MAPPING = "ingest_mapping"
    INGEST_TIMESERIES = "ingest_timeseries"
    ANOMALY_SCAN = "anomaly_scan"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in {JobStatus.QUEUED, JobStatus.RUNNING}


class JobError(BaseModel):
    object_key: str | None = Field(description="Object the problem was found in.")
    line_number: int | None = Field(description="1-based line in that object (1 = header).")
    reason: str


class Job(BaseModel):
    """A background job; its counters are its progress report."""

    id: UUID
    kind: JobKind
    status: JobStatus
    params: dict[str, Any]
    objects_total: int
    objects_done: int
    bytes_total: int
    bytes_done: int
    rows_read: int
    rows_inserted: int
    rows_duplicate: int
    rows_rejected: int
    errors: list[JobError] = Field(
        description="The first 100 problems; all are in rejected_rows_key."
    )
    rejected_rows_key: str | None = Field(
        description="Bucket key of the CSV listing every rejected row (line, reason, raw line)."
    )
    result: dict[str, Any] = Field(description="Kind-specific totals, e.g. DST resolutions.")
    failure_reason: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rows_per_second(self) -> float | None:
        """Rows read per second of running time (so far, while running)."""
        if self.started_at is None:
            return None
        until = self.finished_at or self.heartbeat_at
        if until is None:
            return None
        seconds = (until - self.started_at).total_seconds()
        return round(self.rows_read / seconds, 1) if seconds > 0 else None


class JobPage(BaseModel):
    items: list[Job]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page.")
    has_more: bool
