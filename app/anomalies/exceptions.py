from __future__ import annotations

from app.core.errors import InvalidInput, NotFound, ServiceUnavailable


class AnalysisBusy(ServiceUnavailable):
    """Too many anomaly requests are in progress or waiting."""

    def __init__(self, pending: int) -> None:
        super().__init__(
            f"{pending} anomaly analyses are already in progress or waiting "
            "(ANALYSIS_MAX_PENDING); retry shortly",
            context={"retry_after_seconds": 5},
        )


class AnalysisTimedOut(ServiceUnavailable):
    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the analysis took longer than {seconds:g} s (ANALYSIS_TIMEOUT_SECONDS); "
            "narrow the range or use a fleet scan (POST /anomalies/scan)",
            context={"timeout_seconds": seconds},
        )


class RangeTooLarge(InvalidInput):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the range holds more than {limit:,} readings (ANALYSIS_MAX_POINTS); "
            "narrow it or use a fleet scan",
            context={"parameter": "end", "max_points": limit},
        )


class ScanNotFound(NotFound):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
