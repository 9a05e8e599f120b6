from __future__ import annotations

import uuid

from tests.conftest import IngestEnvironment
from tests.helpers import run_job

NAMES = ["sensor_00001", "sensor_00002", "sensor_00010", "sensorX0001", "other"]
UUIDS = {name: str(uuid.UUID(int=n + 1)) for n, name in enumerate(NAMES)}


async def _registry_with_readings(ingest: IngestEnvironment) -> None:
    await ingest.put(
        "mapping.csv",
        "sensor_name;sensor_uuid\n" + "".join(f"{n};{u}\n" for n, u in UUIDS.items()),
    )
    assert (await run_job(ingest.client, "/ingest/mapping"))["status"] == "succeeded"
    first = UUIDS["sensor_00001"]
    await ingest.put(
        "Timeseries/a.csv",
        "timestamp;sensor_uuid;sensor_value\n"
        f"2013-01-01 00:00:00+00:00;{first};1\n"
        f"2013-01-02 00:00:00+00:00;{first};2\n"
        f"2013-03-05 12:30:00+00:00;{first};3\n",
    )
    assert (await run_job(ingest.client, "/ingest/timeseries"))["status"] == "succeeded"


async def test_a_sensor_shows_its_reading_range_and_count(ingest: IngestEnvironment) -> None:
    await _registry_with_readings(ingest)
    response = await ingest.client.get("/sensors/sensor_00001")
    assert response.status_code == 200
    body = response.json()
    assert {key: body[key] for key in ("name", "uuid", "type", "location", "active")} == {
        "name": "sensor_00001",
        "uuid": UUIDS["sensor_00001"],
        "type": None,
        "location": None,
        "active": True,
    }
    assert (body["first_timestamp"], body["last_timestamp"], body["reading_count"]) == (
        "2013-01-01T00:00:00Z",
        "2013-03-05T12:30:00Z",
        3,
    )
    silent = (await ingest.client.get("/sensors/other")).json()
    assert (silent["reading_count"], silent["first_timestamp"]) == (0, None)


async def test_an_unknown_sensor_is_a_404_naming_it(ingest: IngestEnvironment) -> None:
    response = await ingest.client.get("/sensors/sensor_99999")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "no sensor named 'sensor_99999'"}


async def test_the_prefix_filter_takes_underscores_literally(ingest: IngestEnvironment) -> None:
    await _registry_with_readings(ingest)
    page = (await ingest.client.get("/sensors", params={"prefix": "sensor_"})).json()
    assert [s["name"] for s in page["items"]] == ["sensor_00001", "sensor_00002", "sensor_00010"]
    assert page["has_more"] is False
    assert page["next_cursor"] is None


async def test_a_cursor_walk_lists_every_sensor_once_in_name_order(
    ingest: IngestEnvironment,
) -> None:
    await _registry_with_readings(ingest)
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await ingest.client.get("/sensors", params=params)).json()
        seen += [s["name"] for s in page["items"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == sorted(NAMES)


async def test_bad_list_parameters_get_422(ingest: IngestEnvironment) -> None:
    for params in ({"limit": 0}, {"limit": 5000}, {"cursor": "garbage!"}):
        response = await ingest.client.get("/sensors", params=params)
        assert response.status_code == 422, params
        assert response.json()["error"] == "invalid_input"
