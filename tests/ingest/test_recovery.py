"""Crash safety with real processes: SIGKILL the server in the middle of a timeseries job,
start it again, run a new job, and the stored rows equal those of an uninterrupted run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.devdata import DatasetSpec, Manifest, generate_dataset
from app.devdata.upload import upload_directory
from app.devstack.ports import free_port_block
from tests.conftest import IngestEnvironment, empty_databases
from tests.helpers import (
    ServerProcess,
    assert_sensor_stats_match_readings,
    run_job,
    wait_for_job,
)

FINGERPRINT = """
    SELECT count(*) AS rows,
           md5(string_agg(sensor_uuid::text || ts::text || value::text, ','
                          ORDER BY sensor_uuid, ts)) AS digest
    FROM readings
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, Path]:
    out = tmp_path_factory.mktemp("recovery-dataset")
    # ~1M rows in ~20 objects: a few seconds of loading, long enough to kill mid-job.
    manifest = generate_dataset(DatasetSpec.from_rows(1_000_000, duplicate_boundaries=5), out)
    return manifest, out


@pytest.fixture
def server_port() -> int:
    return free_port_block((0,))


async def _fingerprint(ingest: IngestEnvironment) -> tuple[int, str]:
    connection = await ingest.timeseries()
    try:
        row = await connection.fetchrow(FINGERPRINT)
    finally:
        await connection.close()
    assert row is not None
    return row["rows"], row["digest"]


async def test_sigkill_mid_job_then_a_new_job_equals_an_uninterrupted_run(
    ingest: IngestEnvironment,
    dataset: tuple[Manifest, Path],
    server_port: int,
    tmp_path: Path,
) -> None:
    manifest, out = dataset
    await upload_directory(ingest.s3, ingest.bucket, out / "bucket")

    # The reference: one uninterrupted run.
    assert (await run_job(ingest.client, "/ingest/mapping"))["status"] == "succeeded"
    reference_job = await run_job(ingest.client, "/ingest/timeseries")
    assert reference_job["status"] == "succeeded", reference_job
    reference = await _fingerprint(ingest)
    assert reference[0] == manifest.unique_rows
    assert reference_job["rows_duplicate"] == manifest.duplicate_rows

    await empty_databases(ingest.settings)
    server = ServerProcess(ingest.settings, server_port, tmp_path / "server.log")
    try:
        await server.start()
        async with server.client() as client:
            assert (await run_job(client, "/ingest/mapping"))["status"] == "succeeded"
            started = await client.post("/ingest/timeseries")
            assert started.status_code == 202
            killed_job_id = started.json()["id"]
            while True:  # kill once some, but not all, objects are committed
                job = (await client.get(f"/ingest/jobs/{killed_job_id}")).json()
                assert job["status"] == "running", job
                if job["objects_done"] >= 2:
                    break
                await asyncio.sleep(0.02)
        server.kill()
        assert 0 < job["objects_done"] < job["objects_total"]

        await server.start()
        async with server.client() as client:
            killed = await wait_for_job(client, killed_job_id)
            assert killed["status"] == "failed"
            assert "stopped before it finished" in killed["failure_reason"]
            resumed = await run_job(client, "/ingest/timeseries")
        assert resumed["status"] == "succeeded", resumed
        assert resumed["result"]["objects_skipped"] >= job["objects_done"]
    finally:
        server.stop()
    assert await _fingerprint(ingest) == reference
    await assert_sensor_stats_match_readings(ingest.settings.timeseries_database_url)
