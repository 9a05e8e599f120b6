"""POST /readings through the HTTP API, against real PostgreSQL and S3."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from app.core.config import Settings
from app.readings import live_writes
from app.storage.s3 import S3Client, ensure_bucket
from tests.conftest import IngestEnvironment, empty_databases, running_app
from tests.helpers import assert_sensor_stats_match_readings, run_job

A = str(uuid.UUID(int=0xA))
B = str(uuid.UUID(int=0xB))
D = str(uuid.UUID(int=0xD))
UNREGISTERED = str(uuid.UUID(int=0xF00))
MAPPING = f"sensor_name;sensor_uuid\nsensor_a;{A}\nsensor_b;{B}\nsensor_d;{D}\n"
JSON = "application/json"
NDJSON = "application/x-ndjson"
CSV = "text/csv"


@pytest.fixture(scope="module")
async def bucket(settings: Settings, s3: S3Client) -> str:
    """One bucket for this module: SeaweedFS gives each bucket volumes of its own, and a
    test session has only so many. Only the mapping file is ever put in it."""
    name = f"live-{secrets.token_hex(6)}"
    await ensure_bucket(s3, name)
    return name


@asynccontextmanager
async def live_environment(
    settings: Settings, s3: S3Client, bucket: str, **overrides: Any
) -> AsyncIterator[IngestEnvironment]:
    """Empty databases, the app running, and sensor_a, sensor_b, sensor_d registered by
    loading a mapping file, as ingestion does."""
    await empty_databases(settings)
    configured = settings.model_copy(update={"s3_bucket": bucket, **overrides})
    async with running_app(configured) as client:
        environment = IngestEnvironment(client, configured, s3)
        await environment.put("mapping.csv", MAPPING)
        assert (await run_job(client, "/ingest/mapping"))["status"] == "succeeded"
        yield environment


@pytest.fixture
async def live(settings: Settings, s3: S3Client, bucket: str) -> AsyncIterator[IngestEnvironment]:
    async with live_environment(settings, s3, bucket) as environment:
        yield environment


@pytest.fixture
async def small_limits(
    settings: Settings, s3: S3Client, bucket: str
) -> AsyncIterator[IngestEnvironment]:
    limits = {"live_write_max_bytes": 2048, "live_write_max_rows": 5}
    async with live_environment(settings, s3, bucket, **limits) as environment:
        yield environment


@pytest.fixture
async def rejecting_dst(
    settings: Settings, s3: S3Client, bucket: str
) -> AsyncIterator[IngestEnvironment]:
    rules = {"dst_ambiguous": "reject", "dst_nonexistent": "reject"}
    async with live_environment(settings, s3, bucket, **rules) as environment:
        yield environment


async def post(
    environment: IngestEnvironment, body: Any, content_type: str | None = JSON
) -> httpx.Response:
    if isinstance(body, list):
        body = orjson.dumps(body)
    headers = {"content-type": content_type} if content_type else {}
    return await environment.client.post("/readings", content=body, headers=headers)


def reading(sensor: Any, timestamp: Any, value: Any, *, by: str = "sensor_name") -> dict[str, Any]:
    return {by: sensor, "timestamp": timestamp, "value": value}


async def stored(environment: IngestEnvironment, sensor_uuid: str) -> list[tuple[str, float]]:
    connection = await environment.timeseries()
    try:
        rows = await connection.fetch(
            "SELECT ts, value FROM readings WHERE sensor_uuid = $1 ORDER BY ts",
            uuid.UUID(sensor_uuid),
        )
    finally:
        await connection.close()
    return [(row["ts"].astimezone(UTC).isoformat(), row["value"]) for row in rows]


async def readings_count(environment: IngestEnvironment) -> int:
    connection = await environment.timeseries()
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM readings")
    finally:
        await connection.close()
    return count


def batch_of(content_type: str, *rows: Any) -> Any:
    """A JSON array of reading dicts, or CSV lines under the data-file header."""
    if content_type == CSV:
        return "timestamp;sensor_uuid;sensor_value\n" + "".join(rows)
    return list(rows)


def utc(text: str) -> str:
    return datetime.fromisoformat(text).astimezone(UTC).isoformat()


def outcome(inserted: int, duplicate: int = 0, rejected: Any = ()) -> dict[str, Any]:
    listed = [{"index": index, "reason": reason} for index, reason in rejected]
    return {
        "inserted": inserted,
        "duplicate": duplicate,
        "rejected": listed,
        "rejected_count": len(listed),
    }


# --- formats -------------------------------------------------------------------------------


async def test_json_by_name_and_by_uuid_is_visible_at_once(live: IngestEnvironment) -> None:
    response = await post(
        live,
        [
            reading("sensor_a", "2016-01-01T00:00:00Z", 1.5),
            reading(A.upper(), "2016-01-01T00:15:00Z", 2, by="sensor_uuid"),
            reading("sensor_b", "2016-01-01T00:00:00Z", -3.25),
        ],
    )
    assert response.status_code == 200, response.text
    assert response.json() == outcome(3)

    page = (
        await live.client.get(
            "/readings",
            params={
                "sensor_name": "sensor_a",
                "start": "2016-01-01T00:00:00Z",
                "end": "2016-01-02",
            },
        )
    ).json()
    assert [(item["timestamp"], item["value"]) for item in page["items"]] == [
        ("2016-01-01T00:00:00Z", 1.5),
        ("2016-01-01T00:15:00Z", 2.0),
    ]
    sensor = (await live.client.get("/sensors/sensor_a")).json()
    assert sensor["reading_count"] == 2
    assert (sensor["first_timestamp"], sensor["last_timestamp"]) == (
        "2016-01-01T00:00:00Z",
        "2016-01-01T00:15:00Z",
    )
    await assert_sensor_stats_match_readings(live.settings.timeseries_database_url)


async def test_ndjson_indexes_are_line_numbers_minus_one(live: IngestEnvironment) -> None:
    lines = [
        orjson.dumps(reading("sensor_a", "2016-01-01T00:00:00Z", 1)),
        b"",
        orjson.dumps(reading("sensor_a", "2016-01-01T00:15:00Z", "high")),
        b"   ",
        orjson.dumps(reading(B, "2016-01-01T00:15:00Z", 7.5, by="sensor_uuid")) + b"\r",
    ]
    response = await post(live, b"\n".join(lines) + b"\n", NDJSON)
    assert response.status_code == 200, response.text
    assert response.json() == outcome(2, rejected=[(2, "value 'high' is not a finite number")])
    assert await stored(live, A) == [(utc("2016-01-01T00:00:00Z"), 1.0)]
    assert await stored(live, B) == [(utc("2016-01-01T00:15:00Z"), 7.5)]


async def test_csv_in_the_data_file_format(live: IngestEnvironment) -> None:
    body = (
        "timestamp;sensor_uuid;sensor_value\n"
        f"2016-01-01T00:00:00+01:00;{A};1.5\n"
        f"2016-01-01 01:15:00;{A.upper()};2.5\n"
        f"2016-01-01T00:00:00Z;{UNREGISTERED};3\n"
        f"2016-01-01T00:30:00Z;{B};nan\n"
        "\n"
        f"soon;{B};4\n"
        f"2016-01-01T00:45:00Z;not-a-uuid;5\n"
        f"2016-01-01T00:30:00Z;{B};6\n"
    )
    response = await post(live, body, "text/csv; charset=utf-8")
    assert response.status_code == 200, response.text
    assert response.json() == outcome(
        3,
        rejected=[
            (2, f"unknown sensor_uuid {UNREGISTERED}"),
            (3, "sensor_value 'nan' is not a finite number"),
            (5, "unparseable timestamp 'soon'"),
            (6, "malformed sensor_uuid 'not-a-uuid'"),
        ],
    )
    assert await stored(live, A) == [
        (utc("2015-12-31T23:00:00Z"), 1.5),
        (utc("2016-01-01T00:15:00Z"), 2.5),
    ]
    assert await stored(live, B) == [(utc("2016-01-01T00:30:00Z"), 6.0)]
    await assert_sensor_stats_match_readings(live.settings.timeseries_database_url)


async def test_csv_with_commas_and_an_index_column(live: IngestEnvironment) -> None:
    body = f',sensor_value,timestamp,sensor_uuid\n0,1.25,2016-02-01T00:00:00Z,"{A}"\n'
    response = await post(live, body, CSV)
    assert response.status_code == 200, response.text
    assert response.json() == outcome(1)
    assert await stored(live, A) == [(utc("2016-02-01T00:00:00Z"), 1.25)]


# --- time ----------------------------------------------------------------------------------


async def test_offsets_are_respected_and_naive_times_are_berlin(live: IngestEnvironment) -> None:
    response = await post(
        live,
        [
            reading("sensor_a", "2016-07-01T12:00:00+05:00", 1),  # 07:00 UTC
            reading("sensor_a", "2016-07-01 12:00", 2),  # summer time: 10:00 UTC
            reading("sensor_a", "2016-01-01T12:00:00", 3),  # winter time: 11:00 UTC
            reading("sensor_a", "2013-10-27T02:30:00", 4),  # repeated hour: first, +02:00
            reading("sensor_a", "2013-03-31T02:30:00", 5),  # skipped hour: 03:30 +02:00
        ],
    )
    assert response.status_code == 200, response.text
    assert response.json() == outcome(5)
    assert await stored(live, A) == [
        (utc("2013-03-31T01:30:00Z"), 5.0),
        (utc("2013-10-27T00:30:00Z"), 4.0),
        (utc("2016-01-01T11:00:00Z"), 3.0),
        (utc("2016-07-01T07:00:00Z"), 1.0),
        (utc("2016-07-01T10:00:00Z"), 2.0),
    ]


async def test_dst_rules_can_reject_the_ambiguous_and_skipped_hours(
    rejecting_dst: IngestEnvironment,
) -> None:
    response = await post(
        rejecting_dst,
        [
            reading("sensor_a", "2013-10-27T02:30:00", 1),
            reading("sensor_a", "2013-03-31T02:30:00", 2),
            reading("sensor_a", "2013-10-27T02:30:00+01:00", 3),  # an offset decides
        ],
    )
    assert response.status_code == 200, response.text
    assert response.json() == outcome(
        1,
        rejected=[
            (
                0,
                "ambiguous local time '2013-10-27T02:30:00' in Europe/Berlin (repeated DST hour)",
            ),
            (
                1,
                "nonexistent local time '2013-03-31T02:30:00' in Europe/Berlin (skipped DST hour)",
            ),
        ],
    )
    assert await stored(rejecting_dst, A) == [(utc("2013-10-27T01:30:00Z"), 3.0)]


# --- validation ----------------------------------------------------------------------------


async def test_each_invalid_reading_is_rejected_with_its_reason(live: IngestEnvironment) -> None:
    batch: list[Any] = [
        reading("sensor_a", "2016-03-01T00:00:00Z", 1),
        5,
        {"timestamp": "2016-03-01T00:00:00Z", "value": 1},
        {"sensor_name": "sensor_a", "sensor_uuid": A, "timestamp": "2016-03-01", "value": 1},
        reading("not-a-uuid", "2016-03-01T00:00:00Z", 1, by="sensor_uuid"),
        reading("nope", "2016-03-01T00:00:00Z", 1),
        reading(UNREGISTERED, "2016-03-01T00:00:00Z", 1, by="sensor_uuid"),
        {"sensor_name": "sensor_a", "value": 1},
        reading("sensor_a", "yesterday", 1),
        reading("sensor_a", "2016-03-01T00:15:00Z", "1.5"),
        reading("sensor_a", "2016-03-01T00:15:00Z", True),
        {"sensor_name": "sensor_a", "timestamp": "2016-03-01T00:15:00Z"},
        reading(B, "2016-03-01T00:00:00Z", 2.5, by="sensor_uuid"),
        reading("sensor_a", 1456790400, 1),
        reading(7, "2016-03-01T00:00:00Z", 1),
        reading("sensor_a", "2016-03-01T00:30:00Z", None),
    ]
    response = await post(live, batch)
    assert response.status_code == 200, response.text
    assert response.json() == outcome(
        2,
        rejected=[
            (1, "not a JSON object: 5"),
            (2, "missing sensor_name or sensor_uuid"),
            (3, "give either sensor_name or sensor_uuid, not both"),
            (4, "malformed sensor_uuid 'not-a-uuid'"),
            (5, "no sensor named 'nope'"),
            (6, f"unknown sensor_uuid {UNREGISTERED}"),
            (7, "missing timestamp"),
            (8, "unparseable timestamp 'yesterday'"),
            (9, "value '1.5' is not a finite number"),
            (10, "value true is not a finite number"),
            (11, "missing value"),
            (13, "unparseable timestamp 1456790400"),
            (14, "sensor_name 7 is not a string"),
            (15, "missing value"),
        ],
    )
    assert await stored(live, A) == [(utc("2016-03-01T00:00:00Z"), 1.0)]
    assert await stored(live, B) == [(utc("2016-03-01T00:00:00Z"), 2.5)]
    await assert_sensor_stats_match_readings(live.settings.timeseries_database_url)


async def test_rejections_are_listed_up_to_1000_and_all_counted(live: IngestEnvironment) -> None:
    batch = [reading("sensor_a", "2016-03-01T00:00:00Z", 1)]
    batch += [reading("nope", "2016-03-01T00:00:00Z", n) for n in range(1500)]
    body = (await post(live, batch)).json()
    assert (body["inserted"], body["rejected_count"], len(body["rejected"])) == (1, 1500, 1000)
    assert [r["index"] for r in body["rejected"]] == list(range(1, 1001))


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (JSON, orjson.dumps([reading("nope", "2016-01-01T00:00:00Z", 1), {"value": 2}])),
        (NDJSON, b'{"sensor_name": "nope", "timestamp": "2016-01-01", "value": 1}\n{"value": 2}'),
        (CSV, f"timestamp;sensor_uuid;sensor_value\n2016-01-01;{UNREGISTERED};1\nx;y;z\n"),
    ],
)
async def test_a_batch_without_a_valid_reading_is_422_and_writes_nothing(
    live: IngestEnvironment, content_type: str, body: bytes | str
) -> None:
    response = await post(live, body, content_type)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["error"] == "invalid_input"
    assert error["detail"] == "none of the 2 readings is valid; nothing was written"
    assert error["context"]["rejected_count"] == 2
    assert [r["index"] for r in error["context"]["rejected"]] == [0, 1]
    assert await readings_count(live) == 0


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (JSON, b"[]"),
        (JSON, b""),
        (NDJSON, b"\n \n"),
        (CSV, b"timestamp;sensor_uuid;sensor_value\n"),
        (CSV, b""),
    ],
)
async def test_an_empty_batch_is_422(
    live: IngestEnvironment, content_type: str, body: bytes
) -> None:
    response = await post(live, body, content_type)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "no readings: the batch is empty"


@pytest.mark.parametrize(
    ("content_type", "body", "detail"),
    [
        (JSON, b'[{"sensor_name": "sensor_a", ', "the body is not valid JSON: "),
        (JSON, b'{"sensor_name": "sensor_a"}', "the body must be a JSON array of readings"),
        (NDJSON, b'{"value": 1}\n\n{"value": 2\n', "NDJSON line 3 is not valid JSON: "),
        (JSON, b"[NaN]", "the body is not valid JSON: "),
        (CSV, b"time;uuid;value\n2016-01-01;x;1\n", "CSV header line: missing required column"),
    ],
)
async def test_a_malformed_body_is_422_naming_the_problem(
    live: IngestEnvironment, content_type: str, body: bytes, detail: str
) -> None:
    response = await post(live, body, content_type)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(detail)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
async def test_an_unsupported_content_type_is_415(
    live: IngestEnvironment, content_type: str | None
) -> None:
    response = await post(live, [reading("sensor_a", "2016-01-01T00:00:00Z", 1)], content_type)
    assert response.status_code == 415, response.text
    error = response.json()
    assert error["error"] == "unsupported_media_type"
    assert "application/json, application/x-ndjson, text/csv" in error["detail"]
    assert await readings_count(live) == 0


# --- limits --------------------------------------------------------------------------------


async def test_a_declared_content_length_over_the_limit_is_413_before_reading(
    small_limits: IngestEnvironment,
) -> None:
    # The body itself is tiny: only the header can have caused the 413.
    response = await small_limits.client.post(
        "/readings", content=b"[]", headers={"content-type": JSON, "content-length": "4096"}
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "payload_too_large"
    assert "LIVE_WRITE_MAX_BYTES = 2,048 bytes" in response.json()["detail"]


async def test_a_streamed_body_over_the_limit_is_cut_off_with_413(
    small_limits: IngestEnvironment,
) -> None:
    sent = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(1000):
            sent.append(1)
            yield b" " * 1000

    response = await small_limits.client.post(
        "/readings", content=chunks(), headers={"content-type": JSON}
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert "LIVE_WRITE_MAX_BYTES = 2,048 bytes" in response.json()["detail"]
    assert len(sent) < 10  # the service stopped reading: the rest was never asked for


async def test_a_body_under_the_limit_is_accepted(small_limits: IngestEnvironment) -> None:
    batch = [reading("sensor_a", f"2016-01-01T00:0{n}:00Z", n) for n in range(5)]
    assert len(orjson.dumps(batch)) < 2048
    response = await post(small_limits, batch)
    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == 5


@pytest.mark.parametrize("content_type", [JSON, NDJSON, CSV])
async def test_too_many_readings_is_413(small_limits: IngestEnvironment, content_type: str) -> None:
    times = [f"2016-01-01T00:0{n}:00Z" for n in range(6)]
    if content_type == CSV:
        body: Any = "timestamp;sensor_uuid;sensor_value\n" + "".join(f"{t};{A};1\n" for t in times)
    elif content_type == NDJSON:
        body = b"\n".join(orjson.dumps(reading("sensor_a", t, 1)) for t in times)
    else:
        body = [reading("sensor_a", t, 1) for t in times]
    response = await post(small_limits, body, content_type)
    assert response.status_code == 413, response.text
    assert "6 readings in one request; at most LIVE_WRITE_MAX_ROWS = 5" in response.json()["detail"]
    assert await readings_count(small_limits) == 0


# --- idempotency and duplicates ------------------------------------------------------------


@pytest.mark.parametrize("content_type", [JSON, CSV])
async def test_sending_a_batch_again_inserts_nothing(
    live: IngestEnvironment, content_type: str
) -> None:
    times = ["2016-01-01T00:00:00Z", "2016-01-01T00:15:00Z", "2016-01-01T00:30:00Z"]
    if content_type == CSV:
        body: Any = "timestamp;sensor_uuid;sensor_value\n" + "".join(
            f"{t};{A};{n}\n" for n, t in enumerate(times)
        )
    else:
        body = [reading("sensor_a", t, n) for n, t in enumerate(times)]
    assert (await post(live, body, content_type)).json() == outcome(3)
    assert (await post(live, body, content_type)).json() == outcome(0, duplicate=3)
    assert (await live.client.get("/sensors/sensor_a")).json()["reading_count"] == 3
    await assert_sensor_stats_match_readings(live.settings.timeseries_database_url)


async def test_a_stored_value_is_kept_when_a_batch_repeats_its_instant(
    live: IngestEnvironment,
) -> None:
    await post(live, [reading("sensor_a", "2016-01-01T00:00:00Z", 1)])
    response = await post(
        live,
        [
            reading("sensor_a", "2016-01-01T01:00:00+01:00", 99),
            reading("sensor_a", "2016-01-01T00:15:00Z", 2),
        ],
    )
    assert response.json() == outcome(1, duplicate=1)
    assert await stored(live, A) == [
        (utc("2016-01-01T00:00:00Z"), 1.0),
        (utc("2016-01-01T00:15:00Z"), 2.0),
    ]
    await assert_sensor_stats_match_readings(live.settings.timeseries_database_url)


async def test_repeats_within_a_batch_keep_the_first(live: IngestEnvironment) -> None:
    response = await post(
        live,
        [
            reading("sensor_a", "2016-01-01T00:00:00Z", 1),
            reading("sensor_b", "2016-01-01T00:00:00Z", 5),
            reading(A, "2016-01-01T01:00:00+01:00", 2, by="sensor_uuid"),  # same sensor, instant
            reading("sensor_a", "2016-01-01 01:00", 3),  # naive Berlin: the same instant again
        ],
    )
    assert response.status_code == 200, response.text
    assert response.json() == outcome(2, duplicate=2)
    assert await stored(live, A) == [(utc("2016-01-01T00:00:00Z"), 1.0)]
    assert (await live.client.get("/sensors/sensor_a")).json()["reading_count"] == 1


async def test_concurrent_overlapping_batches_store_each_reading_once(
    live: IngestEnvironment,
) -> None:
    start = datetime(2016, 4, 1, tzinfo=UTC)
    batches = [
        [
            reading(name, (start + timedelta(minutes=minute)).isoformat(), minute)
            for minute in range(first, first + 400)
            for name in ("sensor_a", "sensor_b")
        ]
        for first in (0, 200, 400, 600)
    ]
    responses = await asyncio.gather(*(post(live, batch) for batch in batches))
    assert [r.status_code for r in responses] == [200] * 4
    results = [r.json() for r in responses]
    assert sum(r["inserted"] for r in results) == 2 * 1000
    assert sum(r["duplicate"] for r in results) == 4 * 800 - 2 * 1000
    assert await readings_count(live) == 2 * 1000
    await assert_sensor_stats_match_readings(live.settings.timeseries_database_url)


# --- storage -------------------------------------------------------------------------------


async def test_a_new_month_gets_its_partition(live: IngestEnvironment) -> None:
    response = await post(live, [reading("sensor_a", "2031-05-17T12:00:00Z", 1)])
    assert response.json() == outcome(1)
    connection = await live.timeseries()
    try:
        storage = await connection.fetchval("SELECT readings_storage()")
        partition = await connection.fetchval(
            "SELECT tableoid::regclass::text FROM readings WHERE ts = '2031-05-17T12:00:00Z'"
        )
    finally:
        await connection.close()
    if storage == "postgresql-partitioned":
        assert partition == "readings_p203105"


async def test_a_large_batch_is_parsed_off_the_event_loop_and_stored_whole(
    live: IngestEnvironment,
) -> None:
    start = datetime(2016, 5, 1, tzinfo=UTC)
    batch = [
        reading("sensor_a", (start + timedelta(seconds=n)).isoformat(), n) for n in range(20_000)
    ]
    batch[12_345]["value"] = "oops"
    body = orjson.dumps(batch)
    assert len(body) > live_writes.INLINE_PARSE_MAX_BYTES
    response = await post(live, body)
    assert response.status_code == 200, response.text
    assert response.json() == outcome(
        19_999, rejected=[(12_345, "value 'oops' is not a finite number")]
    )
    assert (await live.client.get("/sensors/sensor_a")).json()["reading_count"] == 19_999


# --- deleted sensors -----------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [JSON, CSV])
async def test_a_sensor_in_deleted_sensors_is_rejected(
    live: IngestEnvironment, content_type: str
) -> None:
    # Step 2 of a deletion committed after the lookup: only the timeseries side knows.
    connection = await live.timeseries()
    await connection.execute("INSERT INTO deleted_sensors (sensor_uuid) VALUES ($1)", uuid.UUID(D))
    try:
        deleted_row: Any = reading("sensor_d", "2016-01-01T00:00:00Z", 1)
        kept_row: Any = reading("sensor_a", "2016-01-01T00:00:00Z", 2)
        if content_type == CSV:
            deleted_row = f"2016-01-01T00:00:00Z;{D};1\n"
            kept_row = f"2016-01-01T00:00:00Z;{A};2\n"
        response = await post(live, batch_of(content_type, deleted_row, kept_row), content_type)
        assert response.status_code == 200, response.text
        assert response.json() == outcome(1, rejected=[(0, "sensor deleted")])
        only_deleted = await post(live, batch_of(content_type, deleted_row), content_type)
        assert only_deleted.status_code == 422, only_deleted.text
        assert only_deleted.json()["context"]["rejected"] == [
            {"index": 0, "reason": "sensor deleted"}
        ]
        assert await stored(live, D) == []
        assert await stored(live, A) == [(utc("2016-01-01T00:00:00Z"), 2.0)]
    finally:
        await connection.execute("DELETE FROM deleted_sensors WHERE sensor_uuid = $1", uuid.UUID(D))
        await connection.close()


async def test_a_sensor_being_deleted_is_unknown(live: IngestEnvironment) -> None:
    connection = await live.metadata()
    try:
        await connection.execute(
            "UPDATE sensors SET deleting_since = now() WHERE sensor_name = 'sensor_b'"
        )
    finally:
        await connection.close()
    response = await post(
        live,
        [
            reading("sensor_b", "2016-01-01T00:00:00Z", 1),
            reading(B, "2016-01-01T00:15:00Z", 2, by="sensor_uuid"),
            reading("sensor_a", "2016-01-01T00:00:00Z", 3),
        ],
    )
    assert response.status_code == 200, response.text
    assert response.json() == outcome(
        1, rejected=[(0, "no sensor named 'sensor_b'"), (1, f"unknown sensor_uuid {B}")]
    )
    assert await stored(live, B) == []


# --- documentation -------------------------------------------------------------------------


async def test_the_endpoint_is_documented(live: IngestEnvironment) -> None:
    operation = (await live.client.get("/openapi.json")).json()["paths"]["/readings"]["post"]
    assert set(operation["requestBody"]["content"]) == {JSON, NDJSON, CSV}
    assert {"200", "413", "415", "422"} <= set(operation["responses"])
