"""POST /readings throughput and latency, against the same writes issued directly with
asyncpg, in the same run on the same machine.

    python bench/live_writes.py                    # JSON, 8 clients, 1,000 rows a batch, 20 s
    python bench/live_writes.py --format csv       # or ndjson
    python bench/live_writes.py --seconds 5        # quicker

A small dataset (100 sensors, one day) is generated and ingested so the sensors exist. Then
8 clients send batches of NEW readings (after the dataset; each batch covers its own
seconds, so nothing is a duplicate) for --seconds, by sensor name in JSON/NDJSON and by
uuid in CSV.

Two baselines write batches of the same shape for as long through 8 asyncpg connections,
with the service's SQL in one transaction: the shared deletion lock, the deleted_sensors
check, the rows, and the sensor_stats update. "staged" writes the rows by binary COPY into
a temp table and INSERT ... ON CONFLICT DO NOTHING; "copy" the way the service does first,
binary COPY straight into readings in a savepoint.

Targets (from the issue): >= 100k rows/s sustained, p99 per batch < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import numpy as np
import numpy.typing as npt
import orjson
import psutil

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.devdata import DatasetSpec, generate_dataset
from app.ingest import repository as ingest_repository
from app.ingest.parsing import COPY_HEADER, COPY_TRAILER, encode_copy_tuples
from app.readings import repository
from bench.readings import percentile
from bench.stack import RssSampler, Service, service_stack, wait_for_job

TARGET_ROWS_PER_SECOND = 100_000
TARGET_P99_MS = 100.0
CONTENT_TYPES = {"json": "application/json", "ndjson": "application/x-ndjson", "csv": "text/csv"}
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STAMP_WIDTH = len("2016-01-01T00:00:00")


@dataclass(eq=False)
class Fleet:
    """Batches of new readings: every sensor at each of `ticks` consecutive seconds. Batch
    `slot` covers seconds [slot * ticks, (slot + 1) * ticks) after `origin`, so batches of
    different slots never share an instant."""

    names: list[str]
    uuids: list[UUID]
    origin: datetime
    rows_per_batch: int
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(7))

    @property
    def ticks(self) -> int:
        return max(1, self.rows_per_batch // len(self.names))

    def columns(self, slot: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
        """(second offsets, sensor indexes, values), one per row."""
        seconds = np.repeat(np.arange(slot * self.ticks, (slot + 1) * self.ticks), len(self.names))
        sensors = np.tile(np.arange(len(self.names)), self.ticks)
        values = np.round(self.rng.normal(20.0, 5.0, seconds.size), 3).tolist()
        return seconds, sensors, values

    def body(self, slot: int, fmt: str) -> bytes:
        """The request body of batch `slot`: the format's template with this batch's
        timestamps written in place, so that the client, which shares the machine with the
        service, spends ~0.1 ms a batch on it rather than ~1 ms."""
        template, offsets = self._template(fmt)
        origin = np.datetime64(self.origin.replace(tzinfo=None), "s")
        ticks = origin + np.arange(slot * self.ticks, (slot + 1) * self.ticks)
        texts = np.datetime_as_string(ticks, unit="s").astype(f"S{STAMP_WIDTH}")
        stamps = np.frombuffer(texts.tobytes(), np.uint8).reshape(-1, STAMP_WIDTH)
        body = template.copy()
        rows = np.arange(offsets.size)
        body[offsets[:, None] + np.arange(STAMP_WIDTH)] = stamps[rows // len(self.names)]
        return body.tobytes()

    @functools.cache  # noqa: B019 - a handful of formats, for the life of the run
    def _template(self, fmt: str) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
        """A body with a placeholder for each row's timestamp (YYYY-MM-DDTHH:MM:SS, then Z),
        and where each placeholder starts. Values are random, drawn once."""
        _, sensors, values = self.columns(0)
        placeholder = "#" * STAMP_WIDTH + "Z"
        if fmt == "csv":
            uuids = [str(u) for u in self.uuids]
            lines = [
                f"{placeholder};{uuids[s]};{v}"
                for s, v in zip(sensors.tolist(), values, strict=True)
            ]
            text = "timestamp;sensor_uuid;sensor_value\n" + "\n".join(lines) + "\n"
        else:
            items = [
                orjson.dumps({"sensor_name": self.names[s], "timestamp": placeholder, "value": v})
                for s, v in zip(sensors.tolist(), values, strict=True)
            ]
            if fmt == "ndjson":
                text = b"\n".join(items).decode() + "\n"
            else:
                text = "[" + b",".join(items).decode() + "]"
        data = text.encode()
        offsets = [match.start() for match in re.finditer(re.escape(placeholder.encode()), data)]
        assert len(offsets) == sensors.size
        return np.frombuffer(data, np.uint8).copy(), np.array(offsets, dtype=np.int64)

    def summary(self, slot: int) -> list[tuple[UUID, datetime, datetime, int]]:
        """(sensor, first, last, count) of a batch, as add_to_sensor_stats takes it."""
        first = self.origin + timedelta(seconds=slot * self.ticks)
        last = first + timedelta(seconds=self.ticks - 1)
        return [(sensor, first, last, self.ticks) for sensor in self.uuids]

    def copy_payload(self, slot: int) -> bytes:
        seconds, sensors, values = self.columns(slot)
        uuid_bytes = np.frombuffer(b"".join(u.bytes for u in self.uuids), np.uint8).reshape(-1, 16)
        start_us = (self.origin - UNIX_EPOCH) // timedelta(microseconds=1)
        instants = start_us + seconds.astype(np.int64) * 1_000_000
        tuples = encode_copy_tuples(instants, uuid_bytes[sensors], values)
        return COPY_HEADER + tuples + COPY_TRAILER


@dataclass
class Load:
    latencies_ms: list[float] = field(default_factory=list)
    rows_sent: int = 0
    inserted: int = 0
    duplicate: int = 0
    rejected: int = 0
    seconds: float = 0.0
    rss_peak_mb: float = 0.0
    rss_range_mb: float = 0.0
    cpu_by_group: dict[str, float] = field(default_factory=dict)  # CPU seconds
    sent_at: list[float] = field(default_factory=list)  # seconds into the run, per batch

    @property
    def rows_per_second(self) -> float:
        return self.rows_sent / self.seconds

    def describe(self) -> str:
        return (
            f"{self.rows_per_second:>9,.0f} rows/s  {len(self.latencies_ms):>5,} batches  "
            f"p50 {statistics.median(self.latencies_ms):6.1f} ms  "
            f"p99 {percentile(self.latencies_ms, 0.99):6.1f} ms"
        )

    def describe_slow(self, limit_ms: float) -> str:
        slow = [at for at, ms in zip(self.sent_at, self.latencies_ms, strict=True) if ms > limit_ms]
        seconds = sorted({int(at) for at in slow})
        return (
            f"{len(slow):,} of {len(self.latencies_ms):,} batches over {limit_ms:g} ms, "
            f"in {len(seconds)} of {int(self.seconds)} seconds: {seconds[:20]}"
        )

    def describe_cpu(self) -> str:
        batches = len(self.latencies_ms)
        return ", ".join(
            f"{group} {seconds / batches * 1000:.2f} ms"
            for group, seconds in self.cpu_by_group.items()
        )


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds used so far by `processes` (ended ones count 0)."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


class CpuMeter:
    """CPU seconds (user + system) used by groups of processes between start and stop."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self._groups = {
            name: [psutil.Process(pid) for pid in pids] for name, pids in groups.items()
        }
        self._started: dict[str, float] = {}

    def __enter__(self) -> CpuMeter:
        self._started = {name: cpu_seconds(group) for name, group in self._groups.items()}
        return self

    def stop(self) -> dict[str, float]:
        return {
            name: cpu_seconds(group) - self._started[name] for name, group in self._groups.items()
        }

    def __exit__(self, *exc: object) -> None:
        pass


async def until_idle(pid: int, limit_seconds: float = 120.0) -> None:
    """Wait until the service and its children use under a tenth of a core: the analysis
    processes warm up (imports, a first fit) for a while after startup, on the same cores."""
    deadline = time.perf_counter() + limit_seconds
    root = psutil.Process(pid)
    while time.perf_counter() < deadline:
        group = [root, *root.children(recursive=True)]
        before = cpu_seconds(group)
        await asyncio.sleep(1.0)
        if cpu_seconds(group) - before < 0.1:
            return
    print(f"the service kept busy for {limit_seconds:g} s; measuring anyway")


async def backend_pids(connection: asyncpg.Connection) -> list[int]:
    """Server processes of this run's databases (other sessions on the server excluded)."""
    rows = await connection.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname IN "
        "(current_database(), replace(current_database(), '_ts', '_meta')) "
        "AND pid <> pg_backend_pid()"
    )
    return [row["pid"] for row in rows]


# Slots are never reused within a run, warm-ups included: every batch holds new readings.
_SLOTS = iter(range(1 << 62))


async def sustain(
    clients: int,
    seconds: float,
    make: Callable[[int], bytes],
    send: Callable[[int, bytes, Load], Awaitable[None]],
    load: Load,
) -> None:
    """`clients` loops calling send(slot, make(slot), load) with unique slots until time is
    up. A batch's latency is its send: building the body is the client's business."""
    began = time.perf_counter()
    deadline = began + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            slot = next(_SLOTS)
            data = make(slot)
            started = time.perf_counter()
            await send(slot, data, load)
            load.latencies_ms.append((time.perf_counter() - started) * 1000)
            load.sent_at.append(started - began)

    await asyncio.gather(*(client() for _ in range(clients)))
    load.seconds = time.perf_counter() - began


async def count_readings(connection: asyncpg.Connection) -> int:
    count: int = await connection.fetchval("SELECT count(*) FROM readings")
    return count


async def through_service(
    service: Service, fleet: Fleet, args: argparse.Namespace, probe: asyncpg.Connection
) -> tuple[Load, Load]:
    """(timed load, warm-up load)."""
    # aiohttp, not httpx, generates the load: its client costs a fraction of httpx's CPU
    # per request, and the client shares this machine's cores with the service.
    session = aiohttp.ClientSession(
        base_url=str(service.client.base_url),
        headers=service.headers,
        connector=aiohttp.TCPConnector(limit=args.clients),
    )
    headers = {"Content-Type": CONTENT_TYPES[args.format]}

    def make(slot: int) -> bytes:
        return fleet.body(slot, args.format)

    async def send(slot: int, body: bytes, load: Load) -> None:
        async with session.post("/readings", data=body, headers=headers) as response:
            assert response.status == 200, await response.text()
            result: dict[str, Any] = await response.json()
        load.rows_sent += fleet.ticks * len(fleet.names)
        load.inserted += result["inserted"]
        load.duplicate += result["duplicate"]
        load.rejected += result["rejected_count"]

    warm_up, load = Load(), Load()
    await sustain(args.clients, 1.0, make, send, warm_up)  # pools, partitions, imports
    service_pids = [service.process.pid]
    service_pids += [p.pid for p in psutil.Process(service.process.pid).children(recursive=True)]
    groups = {
        "service": service_pids,
        "PostgreSQL": await backend_pids(probe),
        "client": [psutil.Process().pid],
    }
    with RssSampler(service.process.pid) as sampler, CpuMeter(groups) as meter:
        await sustain(args.clients, args.seconds, make, send, load)
        load.cpu_by_group = meter.stop()
    await session.close()
    load.rss_peak_mb = sampler.peak / 1e6
    if sampler.samples:
        load.rss_range_mb = (max(sampler.samples) - min(sampler.samples)) / 1e6
    return load, warm_up


async def direct(
    database_url: str, fleet: Fleet, args: argparse.Namespace, route: str, probe: asyncpg.Connection
) -> Load:
    """The service's transaction issued straight from asyncpg. route "staged": COPY into a
    temp table, then INSERT ... ON CONFLICT DO NOTHING RETURNING; route "copy": what the
    service does first, COPY into readings in a savepoint (the staged route on conflict)."""
    pool = await asyncpg.create_pool(database_url, min_size=args.clients, max_size=args.clients)
    assert pool is not None

    async def insert(connection: Any, payload: bytes, slot: int) -> list[Any]:
        if route == "copy":
            try:
                async with connection.transaction():
                    await ingest_repository.copy_readings(connection, payload)
            except asyncpg.UniqueViolationError:
                pass
            else:
                return fleet.summary(slot)  # as the service takes it from its own parse
        rows = await ingest_repository.merge_readings(connection, payload)
        return [(r["sensor_uuid"], r["first_ts"], r["last_ts"], r["count"]) for r in rows]

    async def send(slot: int, payload: bytes, load: Load) -> None:
        async with pool.acquire() as connection, connection.transaction():
            await repository.hold_off_sensor_deletion(connection)
            await repository.deleted_sensor_uuids(connection, fleet.uuids)
            inserted = await insert(connection, payload, slot)
            await ingest_repository.add_to_sensor_stats(connection, inserted)
        load.rows_sent += fleet.ticks * len(fleet.names)

    async with pool.acquire() as connection:
        # The service ensures partitions before writing; so does the baseline, untimed.
        end = fleet.origin + timedelta(days=60)
        await ingest_repository.ensure_partitions(connection, fleet.origin, end)
    await sustain(args.clients, 1.0, fleet.copy_payload, send, Load())
    load = Load()
    groups = {"PostgreSQL": await backend_pids(probe), "client": [psutil.Process().pid]}
    with CpuMeter(groups) as meter:
        await sustain(args.clients, args.seconds, fleet.copy_payload, send, load)
        load.cpu_by_group = meter.stop()
    await pool.close()
    return load


async def sensors_of(service: Service) -> list[tuple[str, UUID]]:
    sensors: list[tuple[str, UUID]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = (await service.client.get("/sensors", params=params)).json()
        sensors += [(s["name"], UUID(s["uuid"])) for s in page["items"]]
        if not page["has_more"]:
            return sensors
        cursor = page["next_cursor"]


async def run(args: argparse.Namespace) -> bool:
    run_id = secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix="bench-live-writes-", dir=args.dir))
    try:
        spec = DatasetSpec.from_rows(args.sensors * 96, sensors=args.sensors)
        manifest = generate_dataset(spec, work / "dataset")
        workers = {"WEB_CONCURRENCY": str(args.workers)}
        async with service_stack(manifest, work, run_id, workers) as service:
            job = (await service.client.post("/ingest/timeseries")).json()
            job = await wait_for_job(service.client, job["id"])
            assert job["status"] == "succeeded", job
            sensors = await sensors_of(service)
            await until_idle(service.process.pid)
            after = manifest.last_timestamp_utc + timedelta(days=1)
            origin = datetime(after.year, after.month, after.day, tzinfo=UTC)
            fleet = Fleet(
                [name for name, _ in sensors], [u for _, u in sensors], origin, args.batch
            )
            rows_per_batch = fleet.ticks * len(fleet.names)
            print(
                f"{manifest.rows_written:,} rows ingested, {len(sensors)} sensors; "
                f"{args.clients} clients x batches of {rows_per_batch:,} rows "
                f"({args.format}, {len(fleet.body(0, args.format)):,} bytes) for "
                f"{args.seconds:g} s, {args.workers} uvicorn worker(s)",
                flush=True,
            )
            connection = await asyncpg.connect(service.settings.timeseries_database_url)
            try:
                before = await count_readings(connection)
                api, warm_up = await through_service(service, fleet, args, connection)
                after_api = await count_readings(connection)
                baselines = {}
                for number, route in enumerate(("staged", "copy"), start=1):
                    # Each baseline writes a later stretch of time: new rows too.
                    fleet.origin = origin + timedelta(days=120 * number)
                    baselines[route] = await direct(
                        service.settings.timeseries_database_url, fleet, args, route, connection
                    )
            finally:
                await connection.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    grew = after_api - before
    staged, copied = baselines["staged"], baselines["copy"]
    print(f"service POST /readings   {api.describe()}")
    print(f"direct asyncpg, staged   {staged.describe()}")
    print(f"direct asyncpg, copy     {copied.describe()}")
    print(
        f"ratio                    {api.rows_per_second / staged.rows_per_second:.2f}x rows/s "
        f"of staged, {api.rows_per_second / copied.rows_per_second:.2f}x of copy "
        f"(the service's own SQL)"
    )
    print(f"CPU per batch, service run:  {api.describe_cpu()}  ({psutil.cpu_count()} CPUs)")
    print(f"slow batches, service run:   {api.describe_slow(TARGET_P99_MS)}")
    print(f"slow batches, copy run:      {copied.describe_slow(TARGET_P99_MS)}")
    print(f"CPU per batch, staged run:   {staged.describe_cpu()}")
    print(f"CPU per batch, copy run:     {copied.describe_cpu()}")
    print(
        f"service RSS peak {api.rss_peak_mb:,.0f} MB, range {api.rss_range_mb:,.1f} MB; "
        f"inserted {api.inserted:,}, duplicate {api.duplicate:,}, rejected {api.rejected:,}"
    )
    reported = warm_up.inserted + api.inserted  # the warm-up's batches are rows too
    counted = "OK" if grew == reported else "MISMATCH"
    print(f"readings grew by {grew:,}; the service reported {reported:,} inserted: {counted}")
    p99 = percentile(api.latencies_ms, 0.99)
    checks = {
        f"throughput {api.rows_per_second:,.0f} rows/s >= {TARGET_ROWS_PER_SECOND:,}": (
            api.rows_per_second >= TARGET_ROWS_PER_SECOND
        ),
        f"p99 {p99:.1f} ms < {TARGET_P99_MS:g} ms": p99 < TARGET_P99_MS,
        "row count grew by what was reported": grew == reported,
        "nothing duplicate or rejected": api.duplicate == api.rejected == 0,
    }
    for check, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {check}")
    passed = all(checks.values())
    print("PASS" if passed else "FAIL")
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=sorted(CONTENT_TYPES), default="json")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1000, help="rows per batch")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--sensors", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--dir", type=Path, default=None)
    passed = asyncio.run(run(parser.parse_args()))
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
