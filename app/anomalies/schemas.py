from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field

from app.anomalies.model import Direction, Method, Model, Seasonality


class SegmentOut(BaseModel):
    start: datetime = Field(description="First reading of the segment.")
    end: datetime = Field(description="Last reading of the segment (inclusive).")
    n: int = Field(description="Readings in the segment.")
    slope_per_day: float = Field(description="Trend of the fit, value units per day.")
    intercept: float = Field(
        description="The trend's fitted value at the segment's first reading (without the "
        "daily cycle)."
    )
    daily_amplitude: float = Field(description="Amplitude of the fitted daily cycle, or 0.")
    r2: float = Field(description="R² of the segment's OLS fit.")
    residual_sd: float = Field(description="Robust sd of the residuals (1.4826 x MAD).")


class ChangePointOut(BaseModel):
    timestamp: datetime = Field(description="First reading of the new segment.")
    kind: str = Field(description="level_shift or slope_change.")
    magnitude: float = Field(
        description="level_shift: jump of the fitted value; slope_change: change of the "
        "slope per day."
    )


class AnomalyOut(BaseModel):
    timestamp: datetime
    value: float
    expected: float = Field(description="The segment's fitted value at this reading.")
    lower: float = Field(description="expected - threshold x residual_sd.")
    upper: float = Field(description="expected + threshold x residual_sd.")
    residual: float
    score: float = Field(description="Robust z-score: residual / the segment's residual_sd.")
    direction: str = Field(description="up or down.")


class WindowOut(BaseModel):
    start: datetime
    end: datetime
    count: int = Field(description="Readings in the window.")
    peak_score: float = Field(description="Largest |score| in the window (0 for flat-lines).")
    kind: str = Field(
        description="spike | dip (at most 3 readings one way), noise (a burst of scattered "
        "scores), flatline (one value repeated), excursion_up | excursion_down (longer "
        "one-sided runs)."
    )


class GapOut(BaseModel):
    start: datetime = Field(description="Last reading before the gap.")
    end: datetime = Field(description="First reading after the gap.")
    seconds: float


class UsedParameters(BaseModel):
    method: Method
    model: Model
    penalty: float | None = Field(description="The penalty used (chosen by BIC when auto).")
    penalty_rule: str
    n_bkps: int | None
    min_segment_seconds: float
    threshold: float
    threshold_rule: str
    direction: Direction
    seasonality: Seasonality
    cpd_points: int = Field(description="Length of the signal the change-point search saw.")
    readings_per_cpd_point: int
    hash: str = Field(description="Identifies these parameters: equal hash, equal method.")


class DataSummary(BaseModel):
    points: int
    first_timestamp: datetime | None
    last_timestamp: datetime | None
    gaps: list[GapOut] = Field(
        description="Stretches without readings over 10 median intervals and 1 hour (the "
        "first 1000)."
    )
    gap_count: int


class AnomalyResult(BaseModel):
    sensor_name: str
    sensor_uuid: UUID
    start: datetime
    end: datetime
    tz: str
    parameters: UsedParameters | None = Field(
        description="Null when the range holds too few readings to analyse."
    )
    summary: DataSummary
    segments: list[SegmentOut]
    change_points: list[ChangePointOut]
    anomalies: list[AnomalyOut] = Field(description="The first 1000 anomalous readings.")
    anomaly_count: int
    windows: list[WindowOut] = Field(description="The first 1000 windows.")
    window_count: int
    truncated: bool = Field(description="Whether anomalies or windows were cut at 1000.")
    explanation: list[str] = Field(description="What was done and found, in sentences.")
    plot_url: str = Field(description="The same analysis drawn as a PNG.")


class ScanRequest(BaseModel):
    """A fleet scan: every sensor (or those with a name prefix) over one range."""

    start: str | None = Field(
        default=None, description="Inclusive; default: each sensor's first reading."
    )
    end: str | None = Field(default=None, description="Exclusive; default: after the last.")
    sensor_prefix: str | None = Field(default=None, max_length=200)
    method: Method = Method.BINSEG
    model: Model = Model.LINEAR
    penalty: str = Field(default="auto", description="A number, or auto (BIC).")
    n_bkps: int | None = Field(default=None, ge=0, le=100)
    min_segment: str | None = Field(default=None, description="A duration: 90m, 6h, 1d, 2w.")
    threshold: str = Field(default="auto", description="A robust z-score, or auto.")
    direction: Direction = Direction.BOTH
    seasonality: Seasonality = Seasonality.DAILY


class ReportEntry(BaseModel):
    rank: int
    sensor_name: str
    sensor_uuid: UUID
    points: int
    anomaly_count: int
    window_count: int
    change_point_count: int
    max_score: float = Field(description="Severity: the largest |score| of any window.")
    window_kinds: dict[str, int]
    windows: list[WindowOut] = Field(description="As found by the scan (UTC).")
    change_points: list[ChangePointOut] = Field(description="As found by the scan (UTC).")
    result_url: str = Field(description="This sensor's full result, recomputed live.")
    plot_url: str


class ScanReport(BaseModel):
    job_id: UUID
    job_status: str
    sensors_analysed: int
    sensors_total: int
    sensors_with_anomalies: int
    parameters: dict[str, object]
    items: list[ReportEntry]
    next_cursor: str | None
    has_more: bool
