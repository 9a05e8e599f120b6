"""Readings latency and streaming through the API, against the same queries issued
directly with asyncpg, in the same run on the same machine.

    python bench/readings.py                  # 20M rows, as the issue asks
    python bench/readings.py --rows 2000000   # quicker
    python bench/readings.py --workers 2      # uvicorn with WEB_CONCURRENCY=2

Latency: 1-day windows of random sensors, 20 concurrent clients, GET /readings (JSON)
versus the identical SELECT through an asyncpg pool of 20 connections.
Streaming: whole sensor histories as CSV and NDJSON versus COPY ... TO STDOUT of the same
query through asyncpg, with the service's RSS sampled throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.devdata import DatasetSpec, generate_dataset
from bench.stack import RssSampler, Service, service_stack, wait_for_job

WINDOW_SQL = """
    SELECT ts, value FROM readings
    WHERE sensor_uuid = $1 AND ts >= $2 AND ts < $3 ORDER BY ts LIMIT 1001
"""


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def concurrently(
    clients: int, requests: int, call: Callable[[int], Awaitable[None]]
) -> list[float]:
    """Latencies (ms) of `requests` calls made by `clients` concurrent loops."""
    latencies: list[float] = []
    counter = iter(range(requests))

    async def client() -> None:
        for n in counter:
            started = time.perf_counter()
            await call(n)
            latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def describe(label: str, latencies: list[float]) -> str:
    return (
        f"{label} p50 {statistics.median(latencies):6.2f} ms  "
        f"p99 {percentile(latencies, 0.99):6.2f} ms"
    )


async def latency(
    service: Service,
    sensors: list[tuple[str, str]],
    args: argparse.Namespace,
    first: datetime,
    days: int,
) -> None:
    rng = random.Random(7)
    windows = []
    for _ in range(args.requests):
        name, sensor_uuid = rng.choice(sensors)
        start = first + timedelta(days=rng.randrange(days - 1))
        windows.append((name, sensor_uuid, start, start + timedelta(days=1)))

    # aiohttp, not httpx, generates the load: its client costs a fraction of httpx's CPU
    # per request, and the client shares this machine's two cores with the service.
    session = aiohttp.ClientSession(
        base_url=str(service.client.base_url),
        headers=service.headers,
        connector=aiohttp.TCPConnector(limit=args.clients),
    )

    async def via_api(n: int) -> None:
        name, _, start, end = windows[n]
        params = {"sensor_name": name, "start": start.isoformat(), "end": end.isoformat()}
        async with session.get("/readings", params=params) as response:
            assert response.status == 200, await response.text()
            await response.read()

    pool = await asyncpg.create_pool(
        service.settings.timeseries_database_url, min_size=args.clients, max_size=args.clients
    )
    assert pool is not None

    async def direct(n: int) -> None:
        _, sensor_uuid, start, end = windows[n]
        async with pool.acquire() as connection:
            await connection.fetch(WINDOW_SQL, sensor_uuid, start, end)

    await concurrently(args.clients, 200, via_api)  # warm-up: caches, pools, JIT-free paths
    await concurrently(args.clients, 200, direct)
    # Rounds alternate between the two, so that a noisy neighbour on this shared machine
    # hits both alike; the summary takes the median round of each.
    rounds: list[tuple[list[float], list[float]]] = []
    for number in range(1, args.rounds + 1):
        api = await concurrently(args.clients, args.requests, via_api)
        baseline = await concurrently(args.clients, args.requests, direct)
        rounds.append((api, baseline))
        print(f"round {number}: {describe('service', api)} | {describe('asyncpg', baseline)}")
    await pool.close()
    await session.close()
    api_p50 = statistics.median(statistics.median(api) for api, _ in rounds)
    api_p99 = statistics.median(percentile(api, 0.99) for api, _ in rounds)
    direct_p50 = statistics.median(statistics.median(direct) for _, direct in rounds)
    direct_p99 = statistics.median(percentile(direct, 0.99) for _, direct in rounds)
    print(f"service GET /readings p50 {api_p50:6.2f} ms  p99 {api_p99:6.2f} ms  (median round)")
    print(f"direct asyncpg        p50 {direct_p50:6.2f} ms  p99 {direct_p99:6.2f} ms")
    print(f"ratio                 p50 {api_p50 / direct_p50:.2f}x  p99 {api_p99 / direct_p99:.2f}x")


async def streaming(service: Service, sensors: list[tuple[str, str]], count: int) -> None:
    chosen = sensors[:count]
    for fmt in ("csv", "ndjson"):
        rows, started = 0, time.perf_counter()
        with RssSampler(service.process.pid) as sampler:
            for name, _ in chosen:
                params = {
                    "sensor_name": name,
                    "start": "2000-01-01",
                    "end": "2100-01-01",
                    "format": fmt,
                }
                async with service.client.stream("GET", "/readings", params=params) as response:
                    async for chunk in response.aiter_bytes():
                        rows += chunk.count(b"\n")
        seconds = time.perf_counter() - started
        rows -= len(chosen) if fmt == "csv" else 0  # header lines
        growth = (max(sampler.samples) - min(sampler.samples)) / 1e6 if sampler.samples else 0
        print(
            f"stream {fmt:<7}      {rows:,} rows in {seconds:.2f} s: {rows / seconds:,.0f} rows/s  "
            f"service RSS peak {sampler.peak / 1e6:,.0f} MB, range {growth:,.1f} MB"
        )
    connection = await asyncpg.connect(service.settings.timeseries_database_url)
    rows, started = 0, time.perf_counter()
    for _, sensor_uuid in chosen:
        sink = bytearray()

        async def collect(data: bytes, sink: bytearray = sink) -> None:
            sink.extend(data)

        await connection.copy_from_query(
            "SELECT ts, value FROM readings WHERE sensor_uuid = $1 ORDER BY ts",
            sensor_uuid,
            output=collect,
            format="csv",
        )
        rows += sink.count(b"\n")
    seconds = time.perf_counter() - started
    await connection.close()
    print(f"direct COPY csv     {rows:,} rows in {seconds:.2f} s: {rows / seconds:,.0f} rows/s")


async def run(args: argparse.Namespace) -> None:
    run_id = secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix="bench-readings-", dir=args.dir))
    try:
        print(f"generating {args.rows:,} rows ...", flush=True)
        manifest = generate_dataset(DatasetSpec.from_rows(args.rows), work / "dataset")
        workers = {"WEB_CONCURRENCY": str(args.workers)}
        async with service_stack(manifest, work, run_id, workers) as service:
            print("ingesting ...", flush=True)
            job = (await service.client.post("/ingest/timeseries")).json()
            job = await wait_for_job(service.client, job["id"], show=True)
            assert job["status"] == "succeeded", job
            sensors = []
            cursor = None
            while True:
                params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
                page = (await service.client.get("/sensors", params=params)).json()
                sensors += [(s["name"], s["uuid"]) for s in page["items"]]
                if not page["has_more"]:
                    break
                cursor = page["next_cursor"]
            days = int(manifest.spec.days)
            print(
                f"{manifest.rows_written:,} rows, {len(sensors)} sensors, {days} days, "
                f"{args.workers} uvicorn worker(s), {args.clients} clients, "
                f"{args.rounds} x {args.requests} requests each"
            )
            await latency(service, sensors, args, manifest.first_timestamp_utc, days)
            await streaming(service, sensors, args.stream_sensors)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=4000, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--stream-sensors", type=int, default=25)
    parser.add_argument("--dir", type=Path, default=None)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
