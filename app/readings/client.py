"""Readings into pandas, for notebooks and the users of the original scripts.

    from app.readings.client import read_readings
    frame = read_readings("sensor_00007", "2013-01-01", "2013-02-01")

It fetches the whole range as CSV in one request (no paging) and parses it with pandas.
"""

from __future__ import annotations

import io
import os
from typing import Any

import httpx
import pandas as pd

DEFAULT_URL = "http://127.0.0.1:8000"


class ReadingsRequestFailed(RuntimeError):
    """The service refused the request; the message is its explanation."""


def _raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        detail: Any = response.json().get("detail")
    except ValueError:
        detail = response.text
    raise ReadingsRequestFailed(f"HTTP {response.status_code}: {detail}")


def _get_readings(
    base_url: str, params: dict[str, Any], api_key: str | None, timeout: float
) -> httpx.Response:
    # The CLI and `make dev`'s .dev/env name the key SENSOR_API_KEY; a notebook can too.
    api_key = api_key or os.environ.get("SENSOR_API_KEY")
    headers = {"X-API-Key": api_key} if api_key else {}
    with httpx.Client(base_url=base_url, timeout=timeout) as client:
        response = client.get("/readings", params=params, headers=headers)
    _raise_for_error(response)
    return response


def read_readings(
    sensor_name: str,
    start: str,
    end: str,
    *,
    base_url: str = DEFAULT_URL,
    tz: str = "UTC",
    api_key: str | None = None,
    timeout: float = 300.0,
) -> pd.DataFrame:
    """Readings of `sensor_name` in [start, end) as a DataFrame indexed by timestamp
    (tz-aware, in `tz`), with one `value` column."""
    params = {"sensor_name": sensor_name, "start": start, "end": end, "tz": tz, "format": "csv"}
    response = _get_readings(base_url, params, api_key, timeout)
    frame = pd.read_csv(io.StringIO(response.text))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).dt.tz_convert(tz)
    return frame.set_index("timestamp")


def fetch_readings_page(
    sensor_name: str,
    start: str,
    end: str,
    *,
    page: int,
    page_size: int,
    base_url: str = DEFAULT_URL,
    tz: str = "UTC",
    api_key: str | None = None,
) -> dict[str, Any]:
    """One page as the JSON API returns it (the original CLI's page-number/page-size)."""
    params: dict[str, Any] = {
        "sensor_name": sensor_name,
        "start": start,
        "end": end,
        "tz": tz,
        "page": page,
        "page_size": page_size,
    }
    body: dict[str, Any] = _get_readings(base_url, params, api_key, timeout=60).json()
    return body
