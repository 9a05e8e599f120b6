from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TimeseriesIngestRequest(BaseModel):
    """Options of a timeseries ingestion; every field is optional."""

    model_config = ConfigDict(extra="forbid")

    prefix: str | None = Field(
        default=None,
        description="Load the objects under this prefix instead of TIMESERIES_PREFIX.",
        max_length=1024,
    )
    on_error: Literal["skip_row", "abort"] = Field(
        default="skip_row",
        description="skip_row: reject bad rows, report them and go on; abort: stop the job at "
        "the first bad row (the object in flight is rolled back).",
    )
    max_errors: int | None = Field(
        default=None, ge=0, description="Stop the job once more rows than this were rejected."
    )
    dst_ambiguous: Literal["infer", "earliest", "latest", "reject"] | None = Field(
        default=None, description="Override DST_AMBIGUOUS for this job."
    )
    dst_nonexistent: Literal["shift_forward", "reject"] | None = Field(
        default=None, description="Override DST_NONEXISTENT for this job."
    )
    reload: bool = Field(
        default=False,
        description="Process every object again, even those the ledger says are loaded "
        "(rows already stored count as duplicates).",
    )
