"""Small async helpers shared by the tests."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.core.config import REPOSITORY_ROOT, Settings
from app.core.logs import HANDLER_NAME
from app.core.migrations import Database, apply_migrations
from app.core.security import API_KEY_HEADER

# The tests' API keys: both scopes (sent by default), read only, write only.
TEST_KEY = "test-key-with-both-scopes"
READ_KEY = "test-key-read-only"
WRITE_KEY = "test-key-write-only"


async def migrate_fresh_databases(metadata_url: str, timeseries_url: str) -> None:
    for database, url in ((Database.METADATA, metadata_url), (Database.TIMESERIES, timeseries_url)):
        connection = await asyncpg.connect(url)
        try:
            await apply_migrations(connection, database, REPOSITORY_ROOT / "db_init")
        finally:
            await connection.close()


async def wait_for_job(
    client: Any, job_id: str, limit_seconds: float = 60.0, jobs_path: str = "/ingest/jobs"
) -> dict[str, Any]:
    """Poll GET {jobs_path}/{id} until the job has finished; return its last state."""
    deadline = asyncio.get_running_loop().time() + limit_seconds
    while True:
        response = await client.get(f"{jobs_path}/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] not in ("queued", "running"):
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"job {job_id} still {job['status']} after {limit_seconds}s: {job}"
            )
        await asyncio.sleep(0.05)


async def run_job(
    client: Any,
    path: str,
    body: dict[str, Any] | None = None,
    jobs_path: str = "/ingest/jobs",
) -> dict[str, Any]:
    """POST a job (ingestion, by default), check the 202 contract, and wait for it to end."""
    response = await client.post(path, json=body) if body is not None else await client.post(path)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"{jobs_path}/{job['id']}"
    return await wait_for_job(client, job["id"], jobs_path=jobs_path)


async def assert_sensor_stats_match_readings(timeseries_url: str) -> None:
    """The per-sensor summary kept by ingestion equals a full count of the readings."""
    connection = await asyncpg.connect(timeseries_url)
    try:
        counted = await connection.fetch(
            "SELECT sensor_uuid, min(ts) AS first_ts, max(ts) AS last_ts, count(*) AS n "
            "FROM readings GROUP BY 1 ORDER BY 1"
        )
        kept = await connection.fetch(
            "SELECT sensor_uuid, first_ts, last_ts, reading_count AS n FROM sensor_stats "
            "WHERE reading_count > 0 ORDER BY 1"
        )
    finally:
        await connection.close()
    assert [tuple(row) for row in kept] == [tuple(row) for row in counted]


class ServerProcess:
    def __init__(
        self,
        settings: Settings,
        port: int,
        log: Path,
        environment: dict[str, str] | None = None,
    ) -> None:
        self._command = [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            # As in the Dockerfile: the app writes its own access lines.
            "--no-access-log",
        ]
        self._environment = {
            **os.environ,
            "PYTHONPATH": str(REPOSITORY_ROOT),
            **settings.to_environment(),
            **(environment or {}),
        }
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

    def client(self, api_key: str = TEST_KEY) -> httpx.AsyncClient:
        """A client of this server that sends `api_key`."""
        return httpx.AsyncClient(
            base_url=self.base_url, timeout=30, headers={API_KEY_HEADER: api_key}
        )

    async def exited(self, limit_seconds: float = 30.0) -> int:
        """Wait for the process to end and return its exit status, without blocking the
        event loop (a proxy the server talks to may run on it)."""
        assert self.process is not None
        deadline = time.monotonic() + limit_seconds
        while (returncode := self.process.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"server still running after {limit_seconds}s")
            await asyncio.sleep(0.05)
        return returncode

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


@contextmanager
def service_log() -> Iterator[io.StringIO]:
    """What the service's log handler (installed by the last create_app) writes, instead
    of stderr: the real handler, filter and formatter, into a buffer."""
    (handler,) = [h for h in logging.getLogger().handlers if h.get_name() == HANDLER_NAME]
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        yield buffer
    finally:
        if previous is not None:
            handler.setStream(previous)
