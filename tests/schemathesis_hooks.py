"""Loaded by schemathesis (SCHEMATHESIS_HOOKS) in tests/test_api_contract.py."""

from __future__ import annotations

from typing import Any

import orjson
import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(context: Any, value: Any) -> bytes:
    """POST /readings documents its NDJSON body as a string: send it as is, else as JSON."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return orjson.dumps(value)
