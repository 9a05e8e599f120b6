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
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import asyncpg

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.migrations import Database
from app.devdata import PRESET_ROWS, DatasetSpec, generate_dataset
from bench.stack import (
    RssSampler,
    drop_databases,
    fresh_database,
    job_seconds,
    service_stack,
    wait_for_job,
)


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
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=args.dir))
    baseline_names = [f"bench_{run_id}_csv", f"bench_{run_id}_binary"]
    try:
        print(f"generating {rows:,} rows ...", flush=True)
        manifest = generate_dataset(DatasetSpec.from_rows(rows), work / "dataset")
        csv_file, binary_file = work / "rows.csv", work / "rows.bin"
        async with service_stack(manifest, work, run_id) as service:
            print("ingesting ...", flush=True)
            with RssSampler(service.process.pid) as sampler:
                started = (await service.client.post("/ingest/timeseries")).json()
                job = await wait_for_job(service.client, started["id"], show=True)
            if not args.skip_baselines:
                print("baselines: exporting the stored rows ...", flush=True)
                url = service.settings.timeseries_database_url
                select = "SELECT ts, sensor_uuid, value FROM readings"
                psql(url, f"\\copy ({select}) TO '{csv_file}' CSV")
                psql(url, f"\\copy ({select}) TO '{binary_file}' (FORMAT binary)")
        mb = manifest.bytes_written / 1e6
        seconds = job_seconds(job)
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
            f"{mb / seconds:,.1f} MB/s  peak RSS {sampler.peak / 1e6:,.0f} MB"
        )
        if args.skip_baselines:
            return
        stored = job["rows_inserted"]
        lower, upper = manifest.first_timestamp_utc, manifest.last_timestamp_utc
        csv_url = await fresh_database(baseline_names[0], Database.TIMESERIES)
        csv_seconds = await timed_baseline(
            csv_url, f"\\copy readings (ts, sensor_uuid, value) FROM '{csv_file}' CSV", lower, upper
        )
        binary_url = await fresh_database(baseline_names[1], Database.TIMESERIES)
        binary_seconds = await timed_baseline(
            binary_url,
            f"\\copy readings (ts, sensor_uuid, value) FROM '{binary_file}' (FORMAT binary)",
            lower,
            upper,
        )
        for label, baseline_seconds in (
            ("psql \\copy CSV", csv_seconds),
            ("binary COPY", binary_seconds),
        ):
            rate = stored / baseline_seconds
            print(
                f"{label:<18}{baseline_seconds:.1f} s  {rate:,.0f} rows/s  "
                f"(service = {service_rate / rate:.2f}x)"
            )
        print(f"reference (22k rows/s, 45 min for 4.5 GB): service = {service_rate / 22_000:.1f}x")
    finally:
        await drop_databases(baseline_names)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--preset", choices=list(PRESET_ROWS), default=None)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the scratch directory")
    parser.add_argument("--skip-baselines", action="store_true", help="only time the service")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
