"""Fleet scans (POST /anomalies/scan) and their report, through the HTTP API."""

from __future__ import annotations

import uuid

import pytest

from tests.anomalies.conftest import POINTS
from tests.conftest import IngestEnvironment
from tests.helpers import run_job, wait_for_job

SCANS = "/anomalies/scan"


async def test_the_report_before_any_scan_says_how_to_start_one(
    sensors: IngestEnvironment,
) -> None:
    response = await sensors.client.get("/anomalies/report")
    assert response.status_code == 404
    assert "POST /anomalies/scan" in response.json()["detail"]


async def test_a_scan_analyses_every_sensor_and_ranks_them(sensors: IngestEnvironment) -> None:
    job = await run_job(sensors.client, SCANS, jobs_path=SCANS)
    assert job["kind"] == "anomaly_scan"
    assert job["status"] == "succeeded", job
    assert (job["objects_total"], job["objects_done"]) == (3, 3)
    assert job["rows_read"] == 2 * POINTS + 10
    assert job["result"]["sensors_with_anomalies"] == 1

    report = (await sensors.client.get("/anomalies/report")).json()
    assert report["job_id"] == job["id"]
    assert (report["sensors_analysed"], report["sensors_total"]) == (3, 3)
    assert report["items"][0]["sensor_name"] == "spiky"
    top = report["items"][0]
    assert (top["rank"], top["window_count"], top["change_point_count"]) == (1, 1, 1)
    assert top["window_kinds"] == {"spike": 1}
    assert [w["kind"] for w in top["windows"]] == ["spike"]
    assert [c["kind"] for c in top["change_points"]] == ["level_shift"]
    assert top["max_score"] > 8

    # The links recompute the same result live and draw it.
    result = await sensors.client.get(top["result_url"])
    assert result.status_code == 200, result.text
    assert [w["kind"] for w in result.json()["windows"]] == ["spike"]
    assert (await sensors.client.get(top["plot_url"])).headers["content-type"] == "image/png"


async def test_the_report_pages_with_a_cursor(sensors: IngestEnvironment) -> None:
    await run_job(sensors.client, SCANS, jobs_path=SCANS)
    names = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await sensors.client.get("/anomalies/report", params=params)).json()
        names += [entry["sensor_name"] for entry in page["items"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert sorted(names) == ["calm", "sparse", "spiky"]
    assert names[0] == "spiky"


async def test_a_scan_takes_a_prefix_range_and_parameters(sensors: IngestEnvironment) -> None:
    body = {
        "sensor_prefix": "sp",
        "start": "2013-01-05T00:00:00Z",
        "end": "2013-01-20T00:00:00Z",
        "threshold": "6",
        "method": "bottomup",
    }
    job = await run_job(sensors.client, SCANS, body, jobs_path=SCANS)
    assert job["status"] == "succeeded", job
    assert job["objects_total"] == 2  # spiky and sparse
    assert job["params"]["threshold"] == "6"
    report = (await sensors.client.get("/anomalies/report", params={"job_id": job["id"]})).json()
    top = report["items"][0]
    assert top["sensor_name"] == "spiky"
    assert top["change_point_count"] == 0  # the shift is after this range
    assert "start=2013-01-05" in top["result_url"]


@pytest.mark.parametrize(
    "body",
    [
        {"penalty": "many"},
        {"threshold": "0"},
        {"min_segment": "forever"},
        {"start": "2013-02-01T00:00:00Z", "end": "2013-01-01T00:00:00Z"},
        {"method": "magic"},
    ],
)
async def test_bad_scan_parameters_get_422_before_a_job_starts(
    sensors: IngestEnvironment, body: dict[str, str]
) -> None:
    response = await sensors.client.post(SCANS, json=body)
    assert response.status_code == 422, response.text


async def test_scans_and_ingestion_jobs_are_separate_resources(
    sensors: IngestEnvironment,
) -> None:
    job = await run_job(sensors.client, SCANS, jobs_path=SCANS)
    assert (await sensors.client.get(f"/ingest/jobs/{job['id']}")).status_code == 404
    ingestion = (await sensors.client.get("/ingest/jobs")).json()["items"][0]
    assert (await sensors.client.get(f"{SCANS}/{ingestion['id']}")).status_code == 404
    assert (await sensors.client.get(f"{SCANS}/{uuid.uuid4()}")).status_code == 404
    unknown = await sensors.client.get("/anomalies/report", params={"job_id": str(uuid.uuid4())})
    assert unknown.status_code == 404
    finished = await sensors.client.delete(f"{SCANS}/{job['id']}")
    assert finished.status_code == 409


async def test_a_cancelled_scan_is_recorded_cancelled_with_its_reason(
    sensors: IngestEnvironment,
) -> None:
    started = await sensors.client.post(SCANS, json={})
    assert started.status_code == 202
    job_id = started.json()["id"]
    # The first analysis waits for the analysis processes to start (no prewarm in tests),
    # so the cancel lands while the scan runs.
    cancelled = await sensors.client.delete(f"{SCANS}/{job_id}")
    assert cancelled.status_code == 202, cancelled.text
    job = await wait_for_job(sensors.client, job_id, jobs_path=SCANS)
    assert job["status"] == "cancelled", job
    assert job["failure_reason"] == "cancelled by request"
