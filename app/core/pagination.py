"""Opaque keyset cursors: clients pass back what we gave them, never an offset."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from app.core.errors import InvalidInput


def encode_cursor(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def decode_cursor(cursor: str, required: set[str]) -> dict[str, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = orjson.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, orjson.JSONDecodeError):
        raise InvalidInput("cursor is not one this service issued") from None
    if not isinstance(position, dict) or not required <= position.keys():
        raise InvalidInput("cursor is not one this service issued")
    return position
