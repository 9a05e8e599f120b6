"""Timeseries ingestion through the API, against `psql \\copy` and a raw binary COPY of the
same rows into an identical empty table, measured in the same run on the same machine.

    python bench/ingest.py --rows 5000000        # or --preset 20m / full

It generates a dataset, uploads it to a SeaweedFS started for the run, starts the service
(uvicorn, a real process) on throwaway databases, loads the mapping, then times the
timeseries job and samples the service's RSS. The baselines then load exactly the rows the
job stored (exported from it) into fresh databases with the same schema.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.config import REPOSITORY_ROOT, Settings
from app.core.migrations import Database, apply_migrations
from app.devdata import PRESET_ROWS, DatasetSpec, generate_dataset
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

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                processes = [self._process, *self._process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in processes))
            except psutil.NoSuchProcess:
                return

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


def psql(url: str, command: str) -> float:
    started = time.perf_counter()
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", command], check=True)
    return time.perf_counter() - started


async def timed_baseline(url: str, command: str, lower: datetime, upper: datetime) -> float:
    """Seconds for `command` into an empty readings table with the same partitions."""
    connection = await asyncpg.connect(url)
    await connection.execute("SELECT ensure_readings_partitions($1, $2)", lower, upper)
    await connection.close()
    return psql(url, command)


async def run(args: argparse.Namespace) -> None:
    rows = PRESET_ROWS[args.preset] if args.preset else args.rows
    run_id = secrets.token_hex(3)
    names = [f"bench_ingest_{run_id}_{suffix}" for suffix in ("meta", "ts", "csv", "binary")]
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=args.dir))
    try:
        print(f"generating {rows:,} rows ...", flush=True)
        manifest = generate_dataset(DatasetSpec.from_rows(rows), work / "dataset")
        metadata_url = await fresh_database(names[0], Database.METADATA)
        timeseries_url = await fresh_database(names[1], Database.TIMESERIES)
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
            )
            async with AsyncExitStack() as stack:
                s3 = await open_s3_client(settings, stack)
                await ensure_bucket(s3, settings.s3_bucket)
                print("uploading ...", flush=True)
                await upload_directory(s3, settings.s3_bucket, manifest.bucket_dir)
            job, peak_rss = await run_service_job(settings, work)
        mb = manifest.bytes_written / 1e6
        seconds = (
            datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
        ).total_seconds()

        seconds_line = (
            f"service           {seconds:.1f} s  {job['rows_read'] / seconds:,.0f} rows/s  "
            f"{mb / seconds:,.1f} MB/s  peak RSS {peak_rss / 1e6:,.0f} MB"
        )
        if args.skip_baselines:
            print(seconds_line)
            return
        print("baselines: exporting the stored rows ...", flush=True)
        csv_file, binary_file = work / "rows.csv", work / "rows.bin"
        psql(
            timeseries_url,
            f"\\copy (SELECT ts, sensor_uuid, value FROM readings) TO '{csv_file}' CSV",
        )
        psql(
            timeseries_url,
            f"\\copy (SELECT ts, sensor_uuid, value FROM readings) TO '{binary_file}' "
            "(FORMAT binary)",
        )
        lower, upper = manifest.first_timestamp_utc, manifest.last_timestamp_utc
        csv_url = await fresh_database(names[2], Database.TIMESERIES)
        csv_seconds = await timed_baseline(
            csv_url, f"\\copy readings (ts, sensor_uuid, value) FROM '{csv_file}' CSV", lower, upper
        )
        binary_url = await fresh_database(names[3], Database.TIMESERIES)
        binary_seconds = await timed_baseline(
            binary_url,
            f"\\copy readings (ts, sensor_uuid, value) FROM '{binary_file}' (FORMAT binary)",
            lower,
            upper,
        )
        stored = job["rows_inserted"]
        service_rate = job["rows_read"] / seconds
        print()
        print(
            f"dataset           {manifest.rows_written:,} rows, "
            f"{len(manifest.files)} objects, {mb:,.0f} MB"
        )
        print(
            f"job               {job['status']}: {job['rows_inserted']:,} inserted, "
            f"{job['rows_duplicate']:,} duplicate, {job['rows_rejected']:,} rejected"
        )
        print(
            f"service           {seconds:.1f} s  {service_rate:,.0f} rows/s  "
            f"{mb / seconds:,.1f} MB/s  "
            f"peak RSS {peak_rss / 1e6:,.0f} MB"
        )
        print(
            f"psql \\copy CSV    {csv_seconds:.1f} s  {stored / csv_seconds:,.0f} rows/s  "
            f"(service = {service_rate / (stored / csv_seconds):.2f}x)"
        )
        print(
            f"binary COPY       {binary_seconds:.1f} s  {stored / binary_seconds:,.0f} rows/s  "
            f"(service = {service_rate / (stored / binary_seconds):.2f}x)"
        )
        print(f"reference (22k rows/s, 45 min for 4.5 GB): service = {service_rate / 22_000:.1f}x")
    finally:
        await drop_databases(names)
        subprocess.run(["rm", "-rf", str(work)], check=False)


async def run_service_job(settings: Settings, work: Path) -> tuple[dict[str, Any], int]:
    port = free_port_block((0,))
    assert settings.s3_access_key_id is not None
    assert settings.s3_secret_access_key is not None
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPOSITORY_ROOT),
        "METADATA_DATABASE_URL": settings.metadata_database_url,
        "TIMESERIES_DATABASE_URL": settings.timeseries_database_url,
        "S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
        "S3_ACCESS_KEY_ID": settings.s3_access_key_id.get_secret_value(),
        "S3_SECRET_ACCESS_KEY": settings.s3_secret_access_key.get_secret_value(),
        "S3_BUCKET": settings.s3_bucket,
        "LOG_LEVEL": "WARNING",
    }
    log = (work / "service.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(300):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            await wait(client, (await client.post("/ingest/mapping")).json()["id"])
            print("ingesting ...", flush=True)
            with RssSampler(server.pid) as sampler:
                job = (await client.post("/ingest/timeseries")).json()
                job = await wait(client, job["id"], show=True)
            return job, sampler.peak
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


async def wait(client: httpx.AsyncClient, job_id: str, show: bool = False) -> dict[str, Any]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--preset", choices=list(PRESET_ROWS), default=None)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the scratch directory")
    parser.add_argument("--skip-baselines", action="store_true", help="only time the service")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
