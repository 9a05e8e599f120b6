from __future__ import annotations

from app.core.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType


class InvalidParameter(InvalidInput):
    """A query parameter is wrong; the message names it and says why."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}", context={"parameter": parameter})


# --- POST /readings ------------------------------------------------------------------------


class InvalidBatch(InvalidInput):
    """A batch of new readings is unusable as a whole (not JSON, no readings, ...);
    nothing of it was written."""


class NoValidReadings(InvalidBatch):
    """Every reading of the batch was rejected; `context` lists why, as a 200 would."""

    def __init__(self, rejected: list[dict[str, int | str]], rejected_count: int) -> None:
        self.rejected_count = rejected_count
        super().__init__(
            f"none of the {rejected_count} readings is valid; nothing was written",
            context={"rejected": rejected, "rejected_count": rejected_count},
        )


class BatchTooLarge(PayloadTooLarge):
    """The body or its number of readings exceeds LIVE_WRITE_MAX_BYTES / _ROWS."""


class UnsupportedBodyFormat(UnsupportedMediaType):
    def __init__(self, content_type: str | None, supported: list[str]) -> None:
        given = f"Content-Type {content_type!r}" if content_type else "a missing Content-Type"
        super().__init__(
            f"{given} is not supported; send one of {', '.join(supported)}",
            context={"supported": supported},
        )
