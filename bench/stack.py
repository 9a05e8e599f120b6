"""What the benchmarks share: throwaway databases, a SeaweedFS, the service as a real
uvicorn process on them, and RSS sampling of that process."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.config import REPOSITORY_ROOT, ApiKey, ApiScope, Settings
from app.core.migrations import Database, apply_migrations
from app.core.security import API_KEY_HEADER
from app.devdata import Manifest
from app.devdata.upload import upload_directory
from app.devstack.ports import free_port_block
from app.devstack.postgres import with_database
from app.devstack.seaweed import SeaweedServer
from app.storage.s3 import ensure_bucket, open_s3_client

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


class RssSampler:
    """Peak RSS of a process and its children, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0
        self.samples: list[int] = []
        self.times: list[float] = []  # time.perf_counter() of each sample

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                processes = [self._process, *self._process.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in processes)
            except psutil.NoSuchProcess:
                return
            self.times.append(time.perf_counter())
            self.samples.append(rss)
            self.peak = max(self.peak, rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def fresh_database(name: str, database: Database) -> str:
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = with_database(ADMIN_URL, name)
    connection = await asyncpg.connect(url)
    await apply_migrations(connection, database, REPOSITORY_ROOT / "db_init")
    await connection.close()
    return url


async def drop_databases(names: list[str]) -> None:
    admin = await asyncpg.connect(ADMIN_URL)
    for name in names:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


def own_key(settings: Settings) -> str:
    """The first configured key with both scopes: the stack's client reads and writes."""
    for key in settings.api_keys:
        if key.scopes == frozenset(ApiScope):
            return key.secret.get_secret_value()
    raise ValueError("API_KEYS needs a bare key (both scopes) for the stack's own client")


@dataclass
class Service:
    settings: Settings
    process: subprocess.Popen[bytes]
    client: httpx.AsyncClient

    @property
    def headers(self) -> dict[str, str]:
        """What every request to the service may send: the stack's key (both scopes)."""
        return {API_KEY_HEADER: own_key(self.settings)}


async def wait_for_job(
    client: httpx.AsyncClient, job_id: str, show: bool = False
) -> dict[str, Any]:
    while True:
        job: dict[str, Any] = (await client.get(f"/ingest/jobs/{job_id}")).json()
        if show:
            print(
                f"\r  {job['objects_done']}/{job['objects_total']} objects  "
                f"{job['rows_read']:,} rows",
                end="",
                flush=True,
            )
        if job["status"] not in ("queued", "running"):
            if show:
                print()
            return job
        await asyncio.sleep(0.5)


def job_seconds(job: dict[str, Any]) -> float:
    """Running time of a finished job, from its own timestamps."""
    started = datetime.fromisoformat(job["started_at"])
    return (datetime.fromisoformat(job["finished_at"]) - started).total_seconds()


@asynccontextmanager
async def service_stack(
    manifest: Manifest,
    work: Path,
    run_id: str,
    environment: dict[str, str] | None = None,
    api_keys: tuple[ApiKey, ...] = (),
) -> AsyncIterator[Service]:
    """Throwaway databases, a SeaweedFS holding the dataset, and the service on them.

    `api_keys` become the service's `API_KEYS` (default: one generated key); they must
    include a bare key (both scopes), which the stack's own client sends to load the
    mapping and poll jobs, as do the benches through `Service.headers`."""
    names = [f"bench_{run_id}_meta", f"bench_{run_id}_ts"]
    metadata_url = await fresh_database(names[0], Database.METADATA)
    timeseries_url = await fresh_database(names[1], Database.TIMESERIES)
    try:
        with SeaweedServer(
            work / "seaweed", access_key="bench", secret_key=secrets.token_hex(8)
        ) as s3server:
            settings = Settings(
                _env_file=None,
                metadata_database_url=metadata_url,
                timeseries_database_url=timeseries_url,
                s3_endpoint_url=s3server.endpoint_url,
                s3_access_key_id=s3server.access_key,
                s3_secret_access_key=s3server.secret_key,
                s3_bucket="bench-data",
                api_keys=api_keys or f"bench@{secrets.token_urlsafe(16)}",
            )
            headers = {API_KEY_HEADER: own_key(settings)}
            async with AsyncExitStack() as stack:
                s3 = await open_s3_client(settings, stack)
                await ensure_bucket(s3, settings.s3_bucket)
                print("uploading ...", flush=True)
                await upload_directory(s3, settings.s3_bucket, manifest.bucket_dir)
            port = free_port_block((0,))
            process_environment = {
                **os.environ,
                "PYTHONPATH": str(REPOSITORY_ROOT),
                **settings.to_environment(),
                "LOG_LEVEL": "WARNING",
                **(environment or {}),
            }
            with (work / "service.log").open("wb") as log:
                process = subprocess.Popen(
                    [
                        *(sys.executable, "-m", "uvicorn", "app.main:app"),
                        *("--port", str(port), "--log-level", "warning", "--no-access-log"),
                    ],
                    env=process_environment,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}",
                    timeout=120,
                    limits=limits,
                    headers=headers,
                ) as client:
                    for _ in range(600):
                        try:
                            if (await client.get("/readyz")).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        await asyncio.sleep(0.1)
                    mapping = (await client.post("/ingest/mapping")).json()
                    await wait_for_job(client, mapping["id"])
                    yield Service(settings, process, client)
            finally:
                process.terminate()
                process.wait(timeout=30)
    finally:
        await drop_databases(names)
