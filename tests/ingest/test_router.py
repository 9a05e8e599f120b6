"""Ingestion through the HTTP API, against real PostgreSQL and a real S3 server."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import uuid
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from tests.conftest import IngestEnvironment
from tests.helpers import assert_sensor_stats_match_readings, run_job, wait_for_job

SENSORS = {f"sensor_{n:05d}": str(uuid.UUID(int=n + 1)) for n in range(3)}
A, B, C = SENSORS.values()


def mapping_csv(pairs: dict[str, str] | None = None) -> str:
    pairs = SENSORS if pairs is None else pairs
    return "sensor_name;sensor_uuid\n" + "".join(f"{n};{u}\n" for n, u in pairs.items())


async def load_mapping(ingest: IngestEnvironment) -> dict[str, Any]:
    await ingest.put("mapping.csv", mapping_csv())
    job = await run_job(ingest.client, "/ingest/mapping")
    assert job["status"] == "succeeded", job
    return job


async def stored_readings(ingest: IngestEnvironment) -> list[tuple[str, datetime, float]]:
    connection = await ingest.timeseries()
    try:
        rows = await connection.fetch(
            "SELECT sensor_uuid::text AS u, ts, value FROM readings ORDER BY 1, 2"
        )
    finally:
        await connection.close()
    return [(row["u"], row["ts"], row["value"]) for row in rows]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --- mapping -------------------------------------------------------------------------------


async def test_mapping_job_registers_every_sensor_and_a_rerun_is_a_no_op(
    ingest: IngestEnvironment,
) -> None:
    first = await load_mapping(ingest)
    assert (first["rows_read"], first["rows_inserted"], first["rows_rejected"]) == (3, 3, 0)
    assert first["objects_done"] == first["objects_total"] == 1
    again = await run_job(ingest.client, "/ingest/mapping")
    assert again["status"] == "succeeded"
    assert (again["rows_inserted"], again["rows_duplicate"]) == (0, 3)


async def test_mapping_conflicts_are_reported_and_never_overwrite(
    ingest: IngestEnvironment,
) -> None:
    await load_mapping(ingest)
    await ingest.put(
        "mapping.csv",
        "sensor_name;sensor_uuid\n"
        f"sensor_00000;{uuid.uuid4()}\n"  # registered name, other uuid
        f"renamed;{B}\n"  # registered uuid, other name
        f"twin;{uuid.uuid4()}\n"
        f"twin;{uuid.uuid4()}\n"  # one name, two uuids in the file
        "bad;not-a-uuid\n"
        f"new_sensor;{uuid.UUID(int=99)}\n",
    )
    job = await run_job(ingest.client, "/ingest/mapping")
    assert job["status"] == "completed_with_errors"
    assert job["rows_inserted"] == 1
    assert job["rows_rejected"] == 5
    reasons = {error["line_number"]: error["reason"] for error in job["errors"]}
    assert "registered with uuid" in reasons[2]
    assert "registered as sensor_00001" in reasons[3]
    assert "several uuids in this file" in reasons[4]
    assert "several uuids in this file" in reasons[5]
    assert "malformed sensor_uuid" in reasons[6]
    connection = await ingest.metadata()
    try:
        rows = await connection.fetch("SELECT sensor_name, sensor_uuid::text AS u FROM sensors")
        registry = {row["sensor_name"]: row["u"] for row in rows}
    finally:
        await connection.close()
    assert registry == {**SENSORS, "new_sensor": str(uuid.UUID(int=99))}
    assert job["rejected_rows_key"] == f"rejected/{job['id']}.csv"


async def test_missing_mapping_object_fails_the_job_with_a_reason(
    ingest: IngestEnvironment,
) -> None:
    job = await run_job(ingest.client, "/ingest/mapping")
    assert job["status"] == "failed"
    assert "mapping.csv does not exist" in job["failure_reason"]


# --- timeseries: formats ------------------------------------------------------------------


async def test_every_csv_variant_loads_with_its_instants(ingest: IngestEnvironment) -> None:
    await load_mapping(ingest)
    await ingest.put(
        "Timeseries/a/offsets.csv",
        f"timestamp;sensor_uuid;sensor_value\n2013-06-01 12:00:00+02:00;{A};1.5\n",
    )
    await ingest.put(
        "Timeseries/a/deeper/indexed.csv",
        f";timestamp;sensor_uuid;sensor_value\n0;2013-01-15 08:00:00;{A};-2.25\n",
    )
    await ingest.put(
        "Timeseries/b/commas_reordered.csv",
        "\ufeffsensor_value,sensor_uuid,timestamp\r\n"
        f'"3.0","{B}","2013-01-15T09:00:00Z"\r\n\r\n'
        f"4.0,{B.upper()},2013-07-15 09:00:00\r\n",
    )
    await ingest.put(
        "Timeseries/b/packed.csv.gz",
        gzip.compress(
            f"timestamp;sensor_uuid;sensor_value\n2013-02-01 00:00:00+01:00;{C};0.1\n".encode()
        ),
    )
    await ingest.put("Timeseries/notes.txt", "not data")
    job = await run_job(ingest.client, "/ingest/timeseries")
    assert job["status"] == "succeeded", job
    assert (job["objects_total"], job["rows_read"], job["rows_inserted"]) == (4, 5, 5)
    assert job["result"]["objects_ignored"] == 1
    assert await stored_readings(ingest) == sorted(
        [
            (A, utc("2013-06-01T10:00:00+00:00"), 1.5),
            (A, utc("2013-01-15T07:00:00+00:00"), -2.25),
            (B, utc("2013-01-15T09:00:00+00:00"), 3.0),
            (B, utc("2013-07-15T07:00:00+00:00"), 4.0),
            (C, utc("2013-01-31T23:00:00+00:00"), 0.1),
        ]
    )


async def test_bad_rows_are_rejected_with_line_numbers_and_written_to_the_bucket(
    ingest: IngestEnvironment,
) -> None:
    await load_mapping(ingest)
    unknown = uuid.uuid4()
    body = (
        "timestamp;sensor_uuid;sensor_value\n"
        f"2013-01-01 00:00:00;{A};1.0\n"
        f"yesterday;{A};1.0\n"
        f"2013-01-01 00:15:00;not-a-uuid;1.0\n"
        f"2013-01-01 00:30:00;{A};abc\n"
        f"2013-01-01 00:45:00;{A};NaN\n"
        f"2013-01-01 01:00:00;{A};inf\n"
        f"2013-01-01 01:15:00;{unknown};1.0\n"
        "\n"
        f"2013-01-01 01:30:00;{A};2.0\n"
    )
    await ingest.put("Timeseries/bad.csv", body)
    job = await run_job(ingest.client, "/ingest/timeseries")
    assert job["status"] == "completed_with_errors"
    assert (job["rows_read"], job["rows_inserted"], job["rows_rejected"]) == (8, 2, 6)
    lines = [error["line_number"] for error in job["errors"]]
    assert lines == [3, 4, 5, 6, 7, 8]
    assert "not in the mapping" in job["errors"][-1]["reason"]
    report = await ingest.s3.get_object(Bucket=ingest.bucket, Key=job["rejected_rows_key"])
    rows = list(csv.DictReader(io.StringIO((await report["Body"].read()).decode())))
    assert [int(row["line_number"]) for row in rows] == [3, 4, 5, 6, 7, 8]
    assert rows[0]["raw_line"] == f"yesterday;{A};1.0"
    assert {row["object_key"] for row in rows} == {"Timeseries/bad.csv"}


async def test_a_file_without_the_required_columns_is_rejected_whole(
    ingest: IngestEnvironment,
) -> None:
    await load_mapping(ingest)
    await ingest.put(
        "Timeseries/wrong.csv",
        f"time;sensor;value\n2013-01-01 00:00:00;{A};1\n2013-01-01 00:15:00;{A};2\n",
    )
    job = await run_job(ingest.client, "/ingest/timeseries")
    assert job["status"] == "completed_with_errors"
    assert (job["rows_read"], job["rows_rejected"], job["rows_inserted"]) == (2, 2, 0)
    assert job["result"]["files_rejected"] == 1
    (error,) = job["errors"]
    assert error["line_number"] == 1
    assert "missing required column" in error["reason"]
    assert "sensor_value" in error["reason"]


async def test_on_error_abort_stops_at_the_first_bad_row(ingest: IngestEnvironment) -> None:
    await load_mapping(ingest)
    await ingest.put(
        "Timeseries/a.csv",
        "timestamp;sensor_uuid;sensor_value\n"
        f"2013-01-01 00:00:00;{A};1.0\n2013-01-01 00:15:00;{A};x\n",
    )
    job = await run_job(ingest.client, "/ingest/timeseries", {"on_error": "abort"})
    assert job["status"] == "failed"
    assert "line 3" in job["failure_reason"]
    assert await stored_readings(ingest) == []


async def test_max_errors_stops_the_job(ingest: IngestEnvironment) -> None:
    await load_mapping(ingest)
    rows = "".join(f"2013-01-01 00:{m:02d}:00;{A};x\n" for m in range(5))
    await ingest.put("Timeseries/a.csv", "timestamp;sensor_uuid;sensor_value\n" + rows)
    job = await run_job(ingest.client, "/ingest/timeseries", {"max_errors": 3})
    assert job["status"] == "failed"
    assert "max_errors=3" in job["failure_reason"]


async def test_invalid_ingest_options_get_422(ingest: IngestEnvironment) -> None:
    for body in ({"on_error": "ignore"}, {"max_errors": -1}, {"unknown": 1}):
        response = await ingest.client.post("/ingest/timeseries", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"] == "invalid_input"


async def test_timeseries_needs_a_mapping_first(ingest: IngestEnvironment) -> None:
    await ingest.put(
        "Timeseries/a.csv", f"timestamp;sensor_uuid;sensor_value\n2013-01-01 00:00:00;{A};1\n"
    )
    job = await run_job(ingest.client, "/ingest/timeseries")
    assert job["status"] == "failed"
    assert "mapping is empty" in job["failure_reason"]


# --- timeseries: time ----------------------------------------------------------------------


async def test_naive_dst_hours_follow_the_documented_rules(ingest: IngestEnvironment) -> None:
    await load_mapping(ingest)
    await ingest.put(
        "Timeseries/autumn.csv",
        "timestamp;sensor_uuid;sensor_value\n"
        f"2013-10-27 01:50:00;{A};1\n"
        f"2013-10-27 02:10:00;{A};2\n"  # first pass: +02:00
        f"2013-10-27 02:40:00;{A};3\n"
        f"2013-10-27 02:10:00;{A};4\n"  # wall clock went back: second pass, +01:00
        f"2013-10-27 03:05:00;{A};5\n",
    )
    await ingest.put(
        "Timeseries/spring.csv",
        f"timestamp;sensor_uuid;sensor_value\n2013-03-31 02:30:00;{B};6\n",
    )
    job = await run_job(ingest.client, "/ingest/timeseries")
    assert job["status"] == "succeeded", job
    assert job["result"]["dst_ambiguous_by_order"] == 3
    assert job["result"]["dst_nonexistent_shifted"] == 1
    assert [r[1] for r in await stored_readings(ingest)] == [
        utc("2013-10-26T23:50:00+00:00"),
        utc("2013-10-27T00:10:00+00:00"),
        utc("2013-10-27T00:40:00+00:00"),
        utc("2013-10-27T01:10:00+00:00"),
        utc("2013-10-27T02:05:00+00:00"),
        utc("2013-03-31T01:30:00+00:00"),
    ]


async def test_dst_reject_rules_reject_those_rows(ingest: IngestEnvironment) -> None:
    await load_mapping(ingest)
    await ingest.put(
        "Timeseries/dst.csv",
        "timestamp;sensor_uuid;sensor_value\n"
        f"2013-10-27 02:10:00;{A};1\n2013-03-31 02:30:00;{B};2\n2013-05-01 12:00:00;{B};3\n",
    )
    job = await run_job(
        ingest.client,
        "/ingest/timeseries",
        {"dst_ambiguous": "reject", "dst_nonexistent": "reject"},
    )
    assert (job["rows_inserted"], job["rows_rejected"]) == (1, 2)


# --- timeseries: exactly once --------------------------------------------------------------


async def test_duplicates_are_stored_once_and_the_stored_value_wins(
    ingest: IngestEnvironment,
) -> None:
    await load_mapping(ingest)
    header = "timestamp;sensor_uuid;sensor_value\n"
    # Within a file the first row wins; the same instant written naive and with an offset
    # is the same reading.
    await ingest.put(
        "Timeseries/1.csv",
        header + f"2013-01-01 00:00:00+01:00;{A};1.0\n2013-01-01 00:00:00;{A};5.0\n",
    )
    first = await run_job(ingest.client, "/ingest/timeseries")
    assert (first["rows_inserted"], first["rows_duplicate"]) == (1, 1)
    # Across files: what is stored already wins over a later file.
    await ingest.put(
        "Timeseries/2.csv",
        header + f"2013-01-01 00:00:00;{A};9.0\n2013-01-01 00:15:00;{A};2.0\n",
    )
    second = await run_job(ingest.client, "/ingest/timeseries")
    assert (second["rows_inserted"], second["rows_duplicate"]) == (1, 1)
    assert [r[2] for r in await stored_readings(ingest)] == [1.0, 2.0]
    await assert_sensor_stats_match_readings(ingest.settings.timeseries_database_url)


async def test_a_rerun_skips_loaded_objects_and_reloads_changed_ones(
    ingest: IngestEnvironment,
) -> None:
    await load_mapping(ingest)
    header = "timestamp;sensor_uuid;sensor_value\n"
    await ingest.put("Timeseries/1.csv", header + f"2013-01-01 00:00:00;{A};1.0\n")
    await ingest.put("Timeseries/2.csv", header + f"2013-01-02 00:00:00;{B};2.0\n")
    first = await run_job(ingest.client, "/ingest/timeseries")
    assert first["rows_inserted"] == 2
    again = await run_job(ingest.client, "/ingest/timeseries")
    assert again["status"] == "succeeded"
    assert (again["rows_read"], again["result"]["objects_skipped"]) == (0, 2)
    await ingest.put(
        "Timeseries/2.csv", header + f"2013-01-02 00:00:00;{B};7.0\n2013-01-03 00:00:00;{B};3.0\n"
    )
    changed = await run_job(ingest.client, "/ingest/timeseries")
    assert changed["result"]["objects_skipped"] == 1
    assert (changed["rows_read"], changed["rows_inserted"], changed["rows_duplicate"]) == (2, 1, 1)
    assert [r[2] for r in await stored_readings(ingest)] == [1.0, 2.0, 3.0]


async def test_listing_follows_pages_past_a_thousand_objects(ingest: IngestEnvironment) -> None:
    await load_mapping(ingest)
    header = "timestamp;sensor_uuid;sensor_value\n"
    limit = asyncio.Semaphore(32)

    async def put(n: int) -> None:
        minute = datetime(2013, 1, 1, tzinfo=UTC).timestamp() + n * 60
        stamp = datetime.fromtimestamp(minute, UTC).strftime("%Y-%m-%d %H:%M:%S+00:00")
        async with limit:
            await ingest.put(f"Timeseries/many/{n:05d}.csv", header + f"{stamp};{A};{n}\n")

    await asyncio.gather(*(put(n) for n in range(1_050)))
    job = await run_job(ingest.client, "/ingest/timeseries")
    assert job["status"] == "succeeded", job
    assert (job["objects_total"], job["objects_done"], job["rows_inserted"]) == (1050, 1050, 1050)


# --- jobs ----------------------------------------------------------------------------------


async def _many_objects(ingest: IngestEnvironment, count: int, rows: int) -> None:
    header = "timestamp;sensor_uuid;sensor_value\n"
    base = datetime(2013, 1, 1, tzinfo=UTC).timestamp()

    async def put(n: int) -> None:
        stamps = (datetime.fromtimestamp(base + (n * rows + i) * 60, UTC) for i in range(rows))
        lines = "".join(
            f"{stamp:%Y-%m-%d %H:%M:%S}+00:00;{A};{i}\n" for i, stamp in enumerate(stamps)
        )
        await ingest.put(f"Timeseries/{n:04d}.csv", header + lines)

    await asyncio.gather(*(put(n) for n in range(count)))


async def test_a_second_timeseries_job_gets_409_with_the_running_job_id(
    ingest: IngestEnvironment,
) -> None:
    await load_mapping(ingest)
    await _many_objects(ingest, 60, 200)
    first = await ingest.client.post("/ingest/timeseries")
    second = await ingest.client.post("/ingest/timeseries")
    assert second.status_code == 409, second.text
    assert second.json()["context"]["running_job_id"] == first.json()["id"]
    done = await wait_for_job(ingest.client, first.json()["id"])
    assert done["status"] == "succeeded"


async def test_cancel_stops_at_a_batch_boundary_and_keeps_what_was_committed(
    ingest: IngestEnvironment,
) -> None:
    await load_mapping(ingest)
    await _many_objects(ingest, 120, 200)
    started = await ingest.client.post("/ingest/timeseries")
    job_id = started.json()["id"]
    await asyncio.sleep(0.3)
    cancelled = await ingest.client.delete(f"/ingest/jobs/{job_id}")
    assert cancelled.status_code == 202
    job = await wait_for_job(ingest.client, job_id)
    assert job["status"] == "cancelled"
    assert job["objects_done"] < job["objects_total"] == 120
    connection = await ingest.timeseries()
    try:
        stored = await connection.fetchval("SELECT count(*) FROM readings")
        ledgered = await connection.fetchval("SELECT sum(rows_inserted) FROM ingested_objects")
    finally:
        await connection.close()
    assert stored == ledgered == job["rows_inserted"]
    resumed = await run_job(ingest.client, "/ingest/timeseries")
    assert resumed["status"] == "succeeded"
    assert resumed["result"]["objects_skipped"] == job["objects_done"]
    assert job["rows_inserted"] + resumed["rows_inserted"] == 120 * 200
    again = await ingest.client.delete(f"/ingest/jobs/{job_id}")
    assert again.status_code == 409


async def test_jobs_are_listed_newest_first_with_a_cursor(ingest: IngestEnvironment) -> None:
    await load_mapping(ingest)
    for _ in range(2):
        await run_job(ingest.client, "/ingest/mapping")
    first_page = (await ingest.client.get("/ingest/jobs", params={"limit": 2})).json()
    assert first_page["has_more"] is True
    second_page = (
        await ingest.client.get(
            "/ingest/jobs", params={"limit": 2, "cursor": first_page["next_cursor"]}
        )
    ).json()
    assert second_page["has_more"] is False
    jobs = first_page["items"] + second_page["items"]
    assert len(jobs) == 3
    created = [job["created_at"] for job in jobs]
    assert created == sorted(created, reverse=True)


@pytest.mark.parametrize("path", ["/ingest/jobs/not-a-uuid", f"/ingest/jobs/{uuid.uuid4()}"])
async def test_unknown_jobs_get_clear_4xx(ingest: IngestEnvironment, path: str) -> None:
    response = await ingest.client.get(path)
    assert response.status_code in (404, 422)
    assert response.json()["error"] in ("not_found", "invalid_input")


async def test_a_forged_cursor_gets_422(ingest: IngestEnvironment) -> None:
    response = await ingest.client.get("/ingest/jobs", params={"cursor": "bm9wZQ"})
    assert response.status_code == 422


async def test_a_generated_dataset_loads_exactly_once(
    ingest: IngestEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from app.devdata import DatasetSpec, generate_dataset
    from app.devdata.upload import upload_directory

    out = tmp_path_factory.mktemp("tiny")
    manifest = generate_dataset(DatasetSpec.preset("tiny"), out)
    await upload_directory(ingest.s3, ingest.bucket, manifest.bucket_dir)
    assert (await run_job(ingest.client, "/ingest/mapping"))[
        "rows_inserted"
    ] == manifest.spec.sensors
    job = await run_job(ingest.client, "/ingest/timeseries")
    assert job["status"] == "succeeded", job
    assert job["rows_read"] == manifest.rows_written
    assert job["rows_inserted"] == manifest.unique_rows
    assert job["rows_duplicate"] == manifest.duplicate_rows
    assert job["result"]["dst_ambiguous_by_order"] > 0  # tiny spans the October change
    # Independently of the service: parse every generated file with pandas (the devdata
    # tests' parser), keep the first value of each (sensor, instant), compare exactly.
    from tests.devdata.test_generator import parse_data_file

    frames = [
        parse_data_file(info, manifest.bucket_dir / info.key).frame for info in manifest.files
    ]
    expected = (
        pd.concat(frames, ignore_index=True)
        .drop_duplicates(subset=["sensor_uuid", "instant"], keep="first")
        .sort_values(["sensor_uuid", "instant"])
    )
    stored = await stored_readings(ingest)
    assert [(u, ts) for u, ts, _ in stored] == [
        (u, ts.to_pydatetime())
        for u, ts in zip(expected["sensor_uuid"], expected["instant"], strict=True)
    ]
    assert [value for _, _, value in stored] == expected["value"].tolist()
    await assert_sensor_stats_match_readings(ingest.settings.timeseries_database_url)
