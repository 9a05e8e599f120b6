"""GET /readings through the HTTP API, against real PostgreSQL and S3."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta
from typing import Any

import pandas as pd
import pytest

from app.readings.schemas import ReadingsPage
from tests.conftest import IngestEnvironment
from tests.readings.conftest import A_TIMES, A, iso


async def get(ingest: IngestEnvironment, **params: Any) -> Any:
    return await ingest.client.get("/readings", params=params)


async def test_start_is_inclusive_and_end_exclusive(loaded: IngestEnvironment) -> None:
    response = await get(
        loaded, sensor_name="sensor_a", start=iso(A_TIMES[10]), end=iso(A_TIMES[13])
    )
    assert response.status_code == 200
    body = response.json()
    assert [item["timestamp"] for item in body["items"]] == [iso(t) for t in A_TIMES[10:13]]
    assert [item["value"] for item in body["items"]] == [5.0, 5.5, 6.0]
    assert (body["count"], body["has_more"], body["next_cursor"]) == (3, False, None)
    assert body["sensor_uuid"] == A


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
async def test_a_page_is_rendered_exactly_as_its_documented_model(
    loaded: IngestEnvironment, tz: str
) -> None:
    # Pages bypass pydantic on the way out (orjson from plain values), so the bytes must
    # match what the response model declared in the OpenAPI would render.
    response = await get(
        loaded, sensor_name="sensor_a", start=iso(A_TIMES[0]), end="2014-01-01", limit=4, tz=tz
    )
    assert response.headers["content-type"] == "application/json"
    page = ReadingsPage.model_validate_json(response.content)
    assert page.model_dump_json().encode() == response.content
    assert page.has_more
    assert page.next_cursor


async def test_naive_times_are_read_in_the_source_timezone(loaded: IngestEnvironment) -> None:
    # 2013-10-26 02:00 Berlin (summer time) is 00:00 UTC.
    body = (
        await get(loaded, sensor_name="sensor_a", start="2013-10-26 02:00", end="2013-10-26 02:30")
    ).json()
    assert [item["timestamp"] for item in body["items"]] == [iso(A_TIMES[0]), iso(A_TIMES[1])]
    assert body["start"] == "2013-10-26T00:00:00Z"


async def test_tz_renders_offsets_of_any_zone(loaded: IngestEnvironment) -> None:
    body = (
        await get(
            loaded,
            sensor_name="sensor_a",
            start="2013-10-27T00:30:00Z",
            end="2013-10-27T01:15:00Z",
            tz="Europe/Berlin",
        )
    ).json()
    assert [item["timestamp"] for item in body["items"]] == [
        "2013-10-27T02:30:00+02:00",
        "2013-10-27T02:45:00+02:00",
        "2013-10-27T02:00:00+01:00",
    ]


async def test_a_cursor_walk_returns_exactly_one_full_read(loaded: IngestEnvironment) -> None:
    for order in ("asc", "desc"):
        seen, cursor = [], None
        while True:
            params: dict[str, Any] = {
                "sensor_name": "sensor_a",
                "start": iso(A_TIMES[0]),
                "end": iso(A_TIMES[-1] + timedelta(minutes=1)),
                "limit": 700,
                "order": order,
            }
            if cursor:
                params["cursor"] = cursor
            body = (await get(loaded, **params)).json()
            seen += [item["timestamp"] for item in body["items"]]
            if not body["has_more"]:
                break
            cursor = body["next_cursor"]
        expected = [iso(t) for t in A_TIMES]
        assert seen == (expected if order == "asc" else expected[::-1])


async def test_cursor_pages_are_stable_under_concurrent_inserts(loaded: IngestEnvironment) -> None:
    params = {"sensor_name": "sensor_a", "start": iso(A_TIMES[0]), "end": iso(A_TIMES[20])}
    first = (await get(loaded, **params, limit=10)).json()
    connection = await loaded.timeseries()
    try:
        await connection.execute(
            "INSERT INTO readings (ts, sensor_uuid, value) VALUES ($1, $3, 0), ($2, $3, 0)",
            A_TIMES[3] + timedelta(minutes=1),  # before the cursor: not repeated, not shifted
            A_TIMES[15] + timedelta(minutes=1),  # after it: shows up once on the next page
            uuid.UUID(A),
        )
    finally:
        await connection.close()
    second = (await get(loaded, **params, limit=50, cursor=first["next_cursor"])).json()
    timestamps = [item["timestamp"] for item in second["items"]]
    assert timestamps[0] == iso(A_TIMES[10])
    assert len(timestamps) == 11
    assert iso(A_TIMES[15] + timedelta(minutes=1)) in timestamps


async def test_page_and_page_size_for_the_original_cli(loaded: IngestEnvironment) -> None:
    body = (
        await get(
            loaded,
            sensor_name="sensor_a",
            start=iso(A_TIMES[0]),
            end=iso(A_TIMES[-1]),
            page=3,
            page_size=100,
        )
    ).json()
    assert [item["timestamp"] for item in body["items"]] == [iso(t) for t in A_TIMES[200:300]]
    assert body["has_more"] is True


async def test_csv_streams_the_whole_range_for_pandas(loaded: IngestEnvironment) -> None:
    response = await get(
        loaded, sensor_name="sensor_a", start=iso(A_TIMES[0]), end="2014-01-01", format="csv"
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    frame = pd.read_csv(io.StringIO(response.text))
    assert list(frame.columns) == ["timestamp", "value"]
    assert len(frame) == len(A_TIMES)  # more than one JSON page: no limit applies
    assert pd.to_datetime(frame["timestamp"], utc=True).tolist() == [
        pd.Timestamp(t) for t in A_TIMES
    ]
    assert frame["value"].tolist() == [n * 0.5 for n in range(len(A_TIMES))]


async def test_ndjson_streams_one_object_a_line(loaded: IngestEnvironment) -> None:
    response = await loaded.client.get(
        "/readings",
        params={
            "sensor_name": "sensor_a",
            "start": iso(A_TIMES[0]),
            "end": "2014-01-01",
            "tz": "Europe/Berlin",
            "order": "desc",
        },
        headers={"Accept": "application/x-ndjson"},
    )
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert len(lines) == len(A_TIMES)
    assert lines[-1] == {"timestamp": "2013-10-26T02:00:00+02:00", "value": 0}
    assert set(lines[0]) == {"timestamp", "value"}


async def test_an_unknown_sensor_is_a_404_naming_it(loaded: IngestEnvironment) -> None:
    response = await get(loaded, sensor_name="nope", start="2013-01-01", end="2013-02-01")
    assert response.status_code == 404
    assert "'nope'" in response.json()["detail"]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"start": "yesterday", "end": "2013-02-01"}, "start"),
        ({"start": "2013-01-01", "end": "2013-13-01"}, "end"),
        ({"start": "2013-02-01", "end": "2013-01-01"}, "end"),
        ({"start": "2013-01-01", "end": "2013-01-01"}, "end"),
        ({"start": "2013-01-01", "end": "2013-02-01", "limit": 0}, "limit"),
        ({"start": "2013-01-01", "end": "2013-02-01", "limit": 10_001}, "limit"),
        ({"start": "2013-01-01", "end": "2013-02-01", "tz": "Mars/Base"}, "tz"),
        ({"start": "2013-01-01", "end": "2013-02-01", "order": "sideways"}, "order"),
        ({"start": "2013-01-01", "end": "2013-02-01", "format": "xml"}, "format"),
        ({"start": "2013-01-01", "end": "2013-02-01", "cursor": "bm9wZQ"}, "cursor"),
        ({"end": "2013-02-01"}, "start"),
    ],
)
async def test_bad_parameters_get_422_naming_them(
    loaded: IngestEnvironment, params: dict[str, Any], named: str
) -> None:
    response = await get(loaded, sensor_name="sensor_a", **params)
    assert response.status_code == 422, response.text
    assert named in json.dumps(response.json())


async def test_a_cursor_of_another_query_is_refused(loaded: IngestEnvironment) -> None:
    base = {"sensor_name": "sensor_a", "start": iso(A_TIMES[0]), "end": iso(A_TIMES[50])}
    cursor = (await get(loaded, **base, limit=10)).json()["next_cursor"]
    response = await get(loaded, **{**base, "order": "desc"}, cursor=cursor)
    assert response.status_code == 422
    assert "another sensor, range or order" in response.json()["detail"]


# --- aggregates ----------------------------------------------------------------------------


async def test_daily_buckets_follow_berlin_days_of_23_or_25_hours(
    loaded: IngestEnvironment,
) -> None:
    response = await loaded.client.get(
        "/readings/aggregate",
        params={
            "sensor_name": "sensor_a",
            "start": "2013-10-26",  # naive: Berlin midnight
            "end": "2013-10-28",
            "interval": "1d",
            "tz": "Europe/Berlin",
            "stats": "count,min,max,avg,median",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(b["start"], b["end"]) for b in body["buckets"]] == [
        ("2013-10-26T00:00:00+02:00", "2013-10-27T00:00:00+02:00"),
        ("2013-10-27T00:00:00+02:00", "2013-10-28T00:00:00+01:00"),  # 25 hours
    ]
    # Readings start 2013-10-26T00:00Z (02:00 Berlin), every 15 minutes.
    assert [b["count"] for b in body["buckets"]] == [88, 100]
    values = pd.Series([n * 0.5 for n in range(len(A_TIMES))])
    second_day = values[88:188]
    bucket = body["buckets"][1]
    assert (bucket["min"], bucket["max"]) == (second_day.min(), second_day.max())
    assert bucket["avg"] == pytest.approx(second_day.mean())
    assert bucket["median"] == pytest.approx(second_day.median())
    assert "stddev" not in bucket  # only the requested stats
    assert (body["count"], body["has_more"]) == (2, False)


async def test_empty_buckets_are_filled_on_request(loaded: IngestEnvironment) -> None:
    params = {
        "sensor_name": "sensor_b",  # one reading, at 2013-10-26T00:00Z
        "start": "2013-10-26T00:00:00Z",
        "end": "2013-10-26T03:00:00Z",
        "interval": "1h",
        "stats": "count,avg",
    }
    omitted = (await loaded.client.get("/readings/aggregate", params=params)).json()
    assert [b["count"] for b in omitted["buckets"]] == [1]
    carried = (
        await loaded.client.get("/readings/aggregate", params={**params, "fill": "previous"})
    ).json()
    assert [(b["count"], b["avg"], b["filled"]) for b in carried["buckets"]] == [
        (1, -1.0, False),
        (0, -1.0, True),
        (0, -1.0, True),
    ]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"interval": "7m"}, "interval"),
        ({"interval": "1y"}, "interval"),
        ({"stats": "count,mode"}, "stats"),
        ({"fill": "zero"}, "fill"),
        ({"interval": "1m", "end": "2015-01-01"}, "interval"),  # too many buckets
    ],
)
async def test_bad_aggregate_parameters_get_422_naming_them(
    loaded: IngestEnvironment, params: dict[str, Any], named: str
) -> None:
    base = {"sensor_name": "sensor_a", "start": "2013-10-26", "end": "2013-10-28"}
    response = await loaded.client.get("/readings/aggregate", params={**base, **params})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(f"{named}:")


async def test_json_covers_at_most_the_configured_days_and_streams_any_range(
    loaded: IngestEnvironment,
) -> None:
    eleven_years = {"sensor_name": "sensor_a", "start": "2010-01-01", "end": "2021-01-02"}
    for path in ("/readings", "/readings/aggregate"):
        response = await loaded.client.get(path, params=eleven_years)
        assert response.status_code == 422, response.text
        assert response.json()["detail"].startswith(
            "end: JSON covers at most READINGS_JSON_MAX_DAYS = 3660 days from start"
        )
    streamed = await loaded.client.get("/readings", params={**eleven_years, "format": "csv"})
    assert streamed.status_code == 200
    assert len(streamed.text.splitlines()) == len(A_TIMES) + 1
