"""Crash safety with real processes: SIGKILL the server in the middle of a timeseries job,
start it again, run a new job, and the stored rows equal those of an uninterrupted run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.core.config import REPOSITORY_ROOT, Settings
from app.devdata import DatasetSpec, Manifest, generate_dataset
from app.devdata.upload import upload_directory
from app.devstack.ports import free_port_block
from tests.conftest import IngestEnvironment, empty_databases
from tests.helpers import assert_sensor_stats_match_readings, run_job, wait_for_job

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


def _server_environment(settings: Settings) -> dict[str, str]:
    assert settings.s3_access_key_id is not None
    assert settings.s3_secret_access_key is not None
    return {
        **os.environ,
        "PYTHONPATH": str(REPOSITORY_ROOT),
        "METADATA_DATABASE_URL": settings.metadata_database_url,
        "TIMESERIES_DATABASE_URL": settings.timeseries_database_url,
        "S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
        "S3_ACCESS_KEY_ID": settings.s3_access_key_id.get_secret_value(),
        "S3_SECRET_ACCESS_KEY": settings.s3_secret_access_key.get_secret_value(),
        "S3_BUCKET": settings.s3_bucket,
        "API_KEYS": "recovery-test-key",
    }


class ServerProcess:
    def __init__(self, settings: Settings, port: int, log: Path) -> None:
        self._command = [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        self._environment = _server_environment(settings)
        self._log = log
        self.base_url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(
                self._command, env=self._environment, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self._log.read_text()
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"server did not become ready: {self._log.read_text()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


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
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
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
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
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
