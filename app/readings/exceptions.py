from __future__ import annotations

from app.core.errors import InvalidInput


class InvalidParameter(InvalidInput):
    """A query parameter is wrong; the message names it and says why."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}", context={"parameter": parameter})
