"""Responses rendered without a pydantic round trip, for the hot paths."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from fastapi import Response


class JSONBytesResponse(Response):
    """JSON rendered by orjson straight from plain values, as pydantic would render the
    route's response model (UUIDs as strings, datetimes ISO 8601, UTC as `Z`).

    Returned directly by a route, it skips FastAPI's validate-then-serialise of the
    response model, which cost more than the database query on a page of readings."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_encode_subclass, option=orjson.OPT_UTC_Z)


def _encode_subclass(value: object) -> str:
    # orjson knows uuid.UUID itself but not subclasses such as asyncpg's.
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
