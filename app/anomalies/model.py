"""What an analysis takes and returns: parameters and results, without the algorithm, so
that the service process can use them without importing ruptures or statsmodels (only the
analysis processes do)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class Method(StrEnum):
    PELT = "pelt"
    BINSEG = "binseg"
    BOTTOMUP = "bottomup"
    WINDOW = "window"
    KERNEL = "kernel"


class Model(StrEnum):
    LINEAR = "linear"
    CONSTANT = "constant"


class Direction(StrEnum):
    BOTH = "both"
    UP = "up"
    DOWN = "down"


class Seasonality(StrEnum):
    DAILY = "daily"
    NONE = "none"


@dataclass(frozen=True)
class DetectionParams:
    method: Method = Method.BINSEG
    model: Model = Model.LINEAR
    penalty: float | None = None  # None: auto (BIC)
    n_bkps: int | None = None
    min_segment_seconds: float | None = None  # None: auto, see resolve_min_segment
    threshold: float | None = None  # None: auto, see auto_threshold
    direction: Direction = Direction.BOTH
    seasonality: Seasonality = Seasonality.DAILY

    def validate(self) -> None:
        """Raises ValueError naming the parameter; the service maps it to 422."""
        if self.penalty is not None and not (math.isfinite(self.penalty) and self.penalty >= 0):
            raise ValueError("penalty: must be a non-negative number or auto")
        if self.n_bkps is not None and self.penalty is not None:
            raise ValueError("n_bkps: give either n_bkps or penalty, not both")
        if self.n_bkps is not None and not 0 <= self.n_bkps <= 100:
            raise ValueError("n_bkps: must be between 0 and 100")
        if self.n_bkps is not None and self.method is Method.PELT:
            raise ValueError("n_bkps: pelt only takes a penalty; use binseg or bottomup")
        if self.threshold is not None and not (
            math.isfinite(self.threshold) and 1.0 <= self.threshold <= 100.0
        ):
            raise ValueError("threshold: must be between 1 and 100 (a robust z-score)")
        if self.min_segment_seconds is not None and not self.min_segment_seconds >= 60:
            raise ValueError("min_segment: must be at least 1 minute")


@dataclass(frozen=True)
class Segment:
    start_us: int
    end_us: int  # last reading of the segment (inclusive)
    n: int
    slope_per_day: float
    intercept: float  # the trend's value at the segment's first reading (without the cycle)
    daily_amplitude: float  # of the fitted daily cycle; 0 when none was fitted
    r2: float
    residual_sd: float


@dataclass(frozen=True)
class ChangePoint:
    timestamp_us: int  # first reading of the new segment
    kind: str  # level_shift | slope_change
    magnitude: float  # level_shift: value jump; slope_change: change of slope per day


@dataclass(frozen=True)
class Anomaly:
    timestamp_us: int
    value: float
    expected: float
    lower: float
    upper: float
    residual: float
    score: float
    direction: str  # up | down


@dataclass(frozen=True)
class Window:
    start_us: int
    end_us: int
    count: int
    peak_score: float
    kind: str  # spike | dip | noise | flatline | excursion_up | excursion_down


@dataclass(frozen=True)
class Gap:
    start_us: int  # last reading before the gap
    end_us: int  # first reading after it
    seconds: float


@dataclass(frozen=True)
class ResolvedParams:
    """The parameters actually used, auto values resolved."""

    method: str
    model: str
    penalty: float | None
    penalty_rule: str
    n_bkps: int | None
    min_segment_seconds: float
    threshold: float
    threshold_rule: str
    direction: str
    seasonality: str
    cpd_points: int
    readings_per_cpd_point: int

    @property
    def digest(self) -> str:
        canonical = repr(sorted(asdict(self).items())).encode()
        return hashlib.sha256(canonical).hexdigest()[:16]


@dataclass
class Detection:
    points: int
    first_us: int | None
    last_us: int | None
    gaps: list[Gap]
    gap_total: int
    params: ResolvedParams | None
    segments: list[Segment] = field(default_factory=list)
    change_points: list[ChangePoint] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    anomaly_total: int = 0
    windows: list[Window] = field(default_factory=list)
    window_total: int = 0
    explanation: list[str] = field(default_factory=list)
    # Per reading, for plots: fitted value and band half-width (not serialised).
    expected: FloatArray | None = None
    band: FloatArray | None = None

    @property
    def max_score(self) -> float:
        return max((w.peak_score for w in self.windows), default=0.0)
