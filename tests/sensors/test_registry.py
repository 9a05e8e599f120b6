"""Registering, changing and deleting sensors through the HTTP API; deletes across both
databases, interrupted and finished."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import IngestEnvironment, running_app
from tests.helpers import run_job

PUMP = uuid.UUID(int=41)
READINGS_CSV = (
    "timestamp;sensor_uuid;sensor_value\n"
    f"2013-01-01 00:00:00+00:00;{PUMP};1\n"
    f"2013-01-01 00:15:00+00:00;{PUMP};2\n"
    f"2013-01-01 00:30:00+00:00;{PUMP};3\n"
)
DAY = {"start": "2013-01-01T00:00:00Z", "end": "2013-01-02T00:00:00Z"}


async def register(env: IngestEnvironment, **body: Any) -> Any:
    return await env.client.post("/sensors", json=body)


async def pump_with_readings(env: IngestEnvironment) -> None:
    response = await register(
        env, name="pump-1", uuid=str(PUMP), type="pressure", unit="bar", location="hall 1"
    )
    assert response.status_code == 201, response.text
    await env.put("Timeseries/pump.csv", READINGS_CSV)
    job = await run_job(env.client, "/ingest/timeseries")
    assert job["rows_inserted"] == 3, job


async def counts(env: IngestEnvironment, sensor_uuid: uuid.UUID) -> tuple[int, int, int]:
    """(readings, sensor_stats rows, registry rows) of a sensor, straight from SQL."""
    timeseries, metadata = await env.timeseries(), await env.metadata()
    try:
        readings = await timeseries.fetchval(
            "SELECT count(*) FROM readings WHERE sensor_uuid = $1", sensor_uuid
        )
        stats = await timeseries.fetchval(
            "SELECT count(*) FROM sensor_stats WHERE sensor_uuid = $1", sensor_uuid
        )
        registered = await metadata.fetchval(
            "SELECT count(*) FROM sensors WHERE sensor_uuid = $1", sensor_uuid
        )
    finally:
        await timeseries.close()
        await metadata.close()
    return readings, stats, registered


async def test_register_read_change_rename_and_delete(ingest: IngestEnvironment) -> None:
    created = await register(ingest, name="boiler", type="temperature", unit="degC")
    assert created.status_code == 201
    assert created.headers["location"] == "/sensors/boiler"
    sensor = created.json()
    generated = uuid.UUID(sensor["uuid"])  # generated, valid
    assert (sensor["type"], sensor["unit"], sensor["location"], sensor["active"]) == (
        "temperature",
        "degC",
        None,
        True,
    )
    assert sensor["reading_count"] == 0

    changed = await ingest.client.patch(
        "/sensors/boiler", json={"location": "roof", "unit": None, "active": False}
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["location"], body["unit"], body["active"], body["type"]) == (
        "roof",
        None,
        False,
        "temperature",
    )
    assert body["updated_at"] > sensor["updated_at"]

    renamed = await ingest.client.patch("/sensors/boiler", json={"name": "boiler-2"})
    assert renamed.json()["uuid"] == str(generated)
    assert (await ingest.client.get("/sensors/boiler")).status_code == 404
    assert (await ingest.client.get("/sensors/boiler-2")).json()["location"] == "roof"

    deleted = await ingest.client.delete("/sensors/boiler-2")
    assert deleted.status_code == 200
    assert deleted.json() == {"name": "boiler-2", "uuid": str(generated), "readings_deleted": 0}
    assert (await ingest.client.get("/sensors/boiler-2")).status_code == 404
    assert (await ingest.client.delete("/sensors/boiler-2")).status_code == 404


async def test_a_rename_keeps_the_readings(ingest: IngestEnvironment) -> None:
    await pump_with_readings(ingest)
    await ingest.client.patch("/sensors/pump-1", json={"name": "pump-one"})
    readings = await ingest.client.get("/readings", params={**DAY, "sensor_name": "pump-one"})
    assert [item["value"] for item in readings.json()["items"]] == [1.0, 2.0, 3.0]
    gone = await ingest.client.get("/readings", params={**DAY, "sensor_name": "pump-1"})
    assert gone.status_code == 404
    assert (await ingest.client.get("/sensors/pump-one")).json()["reading_count"] == 3


async def test_taken_names_and_uuids_get_409(ingest: IngestEnvironment) -> None:
    await register(ingest, name="a", uuid=str(PUMP))
    await register(ingest, name="b")
    same_name = await register(ingest, name="a")
    assert same_name.status_code == 409
    assert "name is taken by sensor 'a'" in same_name.json()["detail"]
    same_uuid = await register(ingest, name="c", uuid=str(PUMP))
    assert same_uuid.status_code == 409
    assert same_uuid.json()["context"] == {"sensor_uuid": str(PUMP)}
    rename = await ingest.client.patch("/sensors/b", json={"name": "a"})
    assert rename.status_code == 409


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": " padded"},
        {"name": "tab\there"},
        {"name": "x" * 201},
        {"name": "hall/1"},  # GET /sensors/{name} could not address it
        {"name": "ok", "location": "nul\x00"},
        {"name": "ok", "uuid": "not-a-uuid"},
        {"name": "ok", "colour": "red"},
        {"name": "ok", "active": "sometimes"},
    ],
)
async def test_bad_registrations_get_422(ingest: IngestEnvironment, body: dict[str, Any]) -> None:
    response = await ingest.client.post("/sensors", json=body)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("body", [{"name": None}, {"active": None}, {"size": 3}])
async def test_bad_changes_get_422(ingest: IngestEnvironment, body: dict[str, Any]) -> None:
    await register(ingest, name="a")
    response = await ingest.client.patch("/sensors/a", json=body)
    assert response.status_code == 422, response.text


async def test_changing_or_deleting_an_unknown_sensor_gets_404(ingest: IngestEnvironment) -> None:
    assert (await ingest.client.patch("/sensors/nope", json={"unit": "V"})).status_code == 404
    assert (await ingest.client.delete("/sensors/nope")).status_code == 404


async def test_the_list_filters_by_location_type_and_active(ingest: IngestEnvironment) -> None:
    await register(ingest, name="t1", type="temperature", location="hall 1")
    await register(ingest, name="t2", type="temperature", location="hall 2", active=False)
    await register(ingest, name="p1", type="pressure", location="hall 1")

    async def names(**params: Any) -> list[str]:
        page = (await ingest.client.get("/sensors", params=params)).json()
        return [sensor["name"] for sensor in page["items"]]

    assert await names(location="hall 1") == ["p1", "t1"]
    assert await names(type="temperature") == ["t1", "t2"]
    assert await names(active="false") == ["t2"]
    assert await names(type="temperature", active="true", prefix="t") == ["t1"]
    assert (await ingest.client.get("/sensors", params={"active": "maybe"})).status_code == 422


async def test_a_delete_removes_the_readings_in_the_other_database(
    ingest: IngestEnvironment,
) -> None:
    await pump_with_readings(ingest)
    assert await counts(ingest, PUMP) == (3, 1, 1)
    deleted = await ingest.client.delete("/sensors/pump-1")
    assert deleted.json()["readings_deleted"] == 3
    assert await counts(ingest, PUMP) == (0, 0, 0)
    gone = await ingest.client.get("/readings", params={**DAY, "sensor_name": "pump-1"})
    assert gone.status_code == 404
    # The name and the uuid are free again, and the uuid may receive readings again.
    again = await register(ingest, name="pump-1", uuid=str(PUMP))
    assert again.status_code == 201
    assert (await run_job(ingest.client, "/ingest/timeseries", {"reload": True}))[
        "rows_inserted"
    ] == 3


async def mark_deleting(env: IngestEnvironment, name: str) -> None:
    """What step 1 of a delete leaves behind when the process dies right after it."""
    metadata = await env.metadata()
    try:
        await metadata.execute(
            "UPDATE sensors SET deleting_since = now() WHERE sensor_name = $1", name
        )
    finally:
        await metadata.close()


async def test_an_interrupted_delete_hides_the_sensor_and_a_rerun_finishes_it(
    ingest: IngestEnvironment,
) -> None:
    await pump_with_readings(ingest)
    await mark_deleting(ingest, "pump-1")
    # Half-deleted: invisible by name, its readings still stored, its name still held.
    assert (await ingest.client.get("/sensors/pump-1")).status_code == 404
    assert (await ingest.client.get("/sensors")).json()["items"] == []
    assert await counts(ingest, PUMP) == (3, 1, 1)
    blocked = await register(ingest, name="pump-1")
    assert blocked.status_code == 409
    assert "DELETE it again to finish" in blocked.json()["detail"]

    rerun = await ingest.client.delete("/sensors/pump-1")
    assert rerun.status_code == 200
    assert rerun.json()["readings_deleted"] == 3
    assert await counts(ingest, PUMP) == (0, 0, 0)


async def test_the_next_startup_finishes_an_interrupted_delete(ingest: IngestEnvironment) -> None:
    await pump_with_readings(ingest)
    await mark_deleting(ingest, "pump-1")
    async with running_app(ingest.settings):
        assert await counts(ingest, PUMP) == (0, 0, 0)


async def test_no_delete_while_a_timeseries_ingestion_runs(ingest: IngestEnvironment) -> None:
    await pump_with_readings(ingest)
    job_id = uuid.uuid4()
    metadata = await ingest.metadata()
    try:
        # Another replica's running job, as its row shows it.
        await metadata.execute(
            "INSERT INTO jobs (id, kind, status) VALUES ($1, 'ingest_timeseries', 'running')",
            job_id,
        )
        response = await ingest.client.delete("/sensors/pump-1")
        assert response.status_code == 409
        assert response.json()["context"] == {"running_job_id": str(job_id)}
        assert await counts(ingest, PUMP) == (3, 1, 1)
    finally:
        await metadata.execute("DELETE FROM jobs WHERE id = $1", job_id)
        await metadata.close()


async def test_the_mapping_adds_sensors_and_never_erases_metadata(
    ingest: IngestEnvironment,
) -> None:
    await register(ingest, name="pump-1", uuid=str(PUMP), unit="bar", location="hall 1")
    new = uuid.UUID(int=42)
    await ingest.put("mapping.csv", f"sensor_name;sensor_uuid\npump-1;{PUMP}\nfan;{new}\n")
    job = await run_job(ingest.client, "/ingest/mapping")
    assert job["status"] == "succeeded", job
    pump = (await ingest.client.get("/sensors/pump-1")).json()
    assert (pump["unit"], pump["location"]) == ("bar", "hall 1")
    assert (await ingest.client.get("/sensors/fan")).json()["uuid"] == str(new)


async def test_a_non_ascii_name_gets_a_percent_encoded_location(ingest: IngestEnvironment) -> None:
    created = await ingest.client.post("/sensors", json={"name": "Kessel Süd 🔥"})
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == "/sensors/Kessel%20S%C3%BCd%20%F0%9F%94%A5"
    fetched = await ingest.client.get(created.headers["Location"])
    assert fetched.json()["name"] == "Kessel Süd 🔥"
