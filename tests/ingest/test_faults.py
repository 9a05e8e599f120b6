"""Faults during ingestion, with real components only: a TCP proxy in front of the real
SeaweedFS resets or stalls transfers mid-object, PostgreSQL ends the service's backends
while refusing new connections (a restart), and a real server process gets SIGTERM
mid-job. Each time the stored rows are checked against an uninterrupted run."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from app.core.config import Settings
from app.devdata import DatasetSpec, Manifest, generate_dataset
from app.devdata.upload import upload_directory
from app.devstack.ports import free_port_block
from app.jobs.service import SHUTDOWN_REASON
from app.storage.s3 import S3Client
from tests.conftest import (
    ADMIN_POSTGRES_URL,
    IngestEnvironment,
    S3Endpoint,
    empty_databases,
    ingest_environment,
    running_app,
)
from tests.fault_proxy import FaultProxy, ResponseFault
from tests.helpers import (
    ServerProcess,
    assert_sensor_stats_match_readings,
    run_job,
    wait_for_job,
)
from tests.ingest.test_recovery import FINGERPRINT
from tests.ingest.test_router import mapping_csv

# --- helpers -------------------------------------------------------------------------------


def fault_settings(settings: Settings, s3_proxy: FaultProxy, **overrides: Any) -> Settings:
    """The service talks to S3 through the proxy. One attempt per S3 request, so that each
    injected fault costs exactly one object attempt; short backoff, so tests are quick."""
    return settings.model_copy(
        update={
            "s3_endpoint_url": s3_proxy.url,
            "s3_request_attempts": 1,
            "ingest_object_attempts": 3,
            "ingest_retry_backoff_seconds": 0.05,
            "s3_read_timeout_seconds": 60.0,
            **overrides,
        }
    )


def object_get(bucket: str, key: str) -> bytes:
    """The request line of a GET of that object (a HEAD of it does not match)."""
    return f"GET /{bucket}/{key} ".encode()


def sensors(count: int) -> dict[str, str]:
    return {f"sensor_{n:05d}": str(uuid.UUID(int=n + 1)) for n in range(count)}


def readings_csv(sensor_uuids: list[str], start: datetime, minutes: int) -> bytes:
    """One reading a minute per sensor, all inside `start`'s month (one partition)."""
    stamps = [(start + timedelta(minutes=m)).isoformat() for m in range(minutes)]
    rows = (
        f"{stamp};{sensor};{(m * 7 + s) % 1000 / 10}\n"
        for m, stamp in enumerate(stamps)
        for s, sensor in enumerate(sensor_uuids)
    )
    return ("timestamp;sensor_uuid;sensor_value\n" + "".join(rows)).encode()


async def put_mapping(ingest: IngestEnvironment, pairs: dict[str, str]) -> None:
    await ingest.put("mapping.csv", mapping_csv(pairs))
    assert (await run_job(ingest.client, "/ingest/mapping"))["status"] == "succeeded"


async def put_small_objects(ingest: IngestEnvironment, names: list[str], rows: int) -> list[str]:
    """Objects of `rows` readings of one sensor each, on days that do not overlap."""
    (sensor,) = sensors(1).values()
    await put_mapping(ingest, sensors(1))
    keys = []
    for day, name in enumerate(names):
        key = f"Timeseries/{name}.csv"
        start = datetime(2014, 3, 1 + day, tzinfo=UTC)
        await ingest.put(key, readings_csv([sensor], start, rows))
        keys.append(key)
    return keys


async def fetch(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetch(query, *args)
    finally:
        await connection.close()


async def fingerprint(settings: Settings) -> tuple[int, str]:
    (row,) = await fetch(settings.timeseries_database_url, FINGERPRINT)
    return row["rows"], row["digest"]


async def committed(settings: Settings) -> tuple[int, int, dict[str, int]]:
    """(readings stored, readings the ledger accounts for, rows read per ledgered object)."""
    url = settings.timeseries_database_url
    (stored,) = await fetch(url, "SELECT count(*) AS n FROM readings")
    ledger = await fetch(url, "SELECT object_key, rows_read, rows_inserted FROM ingested_objects")
    accounted = sum(row["rows_inserted"] for row in ledger)
    return stored["n"], accounted, {row["object_key"]: row["rows_read"] for row in ledger}


async def wait_until(condition: Callable[[], Any], what: str, limit_seconds: float = 30) -> None:
    """Poll `condition` (plain or awaitable) until it holds; fail after the limit."""
    deadline = asyncio.get_running_loop().time() + limit_seconds
    while True:
        holds = condition()
        if inspect.isawaitable(holds):
            holds = await holds
        if holds:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {limit_seconds}s: {what}")
        await asyncio.sleep(0.02)


async def wait_for_progress(client: Any, job_id: str) -> dict[str, Any]:
    """Until the job reports a committed object (while still running)."""
    job: dict[str, Any] = {}

    async def progressed() -> bool:
        nonlocal job
        job = (await client.get(f"/ingest/jobs/{job_id}")).json()
        assert job["status"] == "running", job
        return bool(job["objects_done"] >= 1)

    await wait_until(progressed, f"job {job_id} commits an object")
    return job


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
async def s3_proxy(s3_endpoint: S3Endpoint) -> AsyncIterator[FaultProxy]:
    target = urlsplit(s3_endpoint.url)
    assert target.hostname is not None
    assert target.port is not None
    proxy = await FaultProxy(target.hostname, target.port).start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def faulty(
    settings: Settings, s3: S3Client, s3_proxy: FaultProxy
) -> AsyncIterator[IngestEnvironment]:
    """The app on a fresh bucket and empty databases, reaching S3 through the proxy."""
    async with ingest_environment(fault_settings(settings, s3_proxy), s3) as environment:
        yield environment


@dataclass(frozen=True)
class Reference:
    """A generated dataset in a bucket of its own, and what an uninterrupted run stored."""

    bucket: str
    keys: list[str]
    fingerprint: tuple[int, str]
    rows_read: dict[str, int]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, Path]:
    out = tmp_path_factory.mktemp("faults-dataset")
    # 20 objects of 10k rows, with duplicates across file boundaries: enough objects that a
    # fault lands between committed ones and pending ones.
    spec = DatasetSpec.from_rows(200_000, rows_per_file=10_000, duplicate_boundaries=5)
    return generate_dataset(spec, out), out


@pytest.fixture(scope="module")
async def reference(settings: Settings, s3: S3Client, dataset: tuple[Manifest, Path]) -> Reference:
    manifest, out = dataset
    async with ingest_environment(settings, s3) as ingest:
        await upload_directory(s3, ingest.bucket, out / "bucket")
        assert (await run_job(ingest.client, "/ingest/mapping"))["status"] == "succeeded"
        job = await run_job(ingest.client, "/ingest/timeseries")
        assert job["status"] == "succeeded", job
        stored, accounted, rows_read = await committed(ingest.settings)
        assert stored == accounted == manifest.unique_rows
        return Reference(
            bucket=ingest.bucket,
            keys=sorted(info.key for info in manifest.files),
            fingerprint=await fingerprint(ingest.settings),
            rows_read=rows_read,
        )


async def assert_no_partial_object(
    settings: Settings, reference: Reference
) -> tuple[set[str], int]:
    """Every committed object is whole (as many rows read as in the uninterrupted run) and
    its readings are all accounted for; return the objects and readings committed."""
    stored, accounted, rows_read = await committed(settings)
    assert stored == accounted
    assert rows_read == {key: reference.rows_read[key] for key in rows_read}
    return set(rows_read), stored


# --- S3 faults -----------------------------------------------------------------------------


async def test_a_transfer_cut_off_mid_object_rolls_it_back_and_loads_it_again_from_the_start(
    faulty: IngestEnvironment, s3_proxy: FaultProxy
) -> None:
    pairs = sensors(12)
    await put_mapping(faulty, pairs)
    # ~25 MB: the loader COPYs its first ~8 MB block before the transfer breaks at 12 MB.
    body = readings_csv(list(pairs.values()), datetime(2014, 1, 1, tzinfo=UTC), 30_000)
    expected_rows = 12 * 30_000
    await faulty.put("Timeseries/big.csv", body)
    stall = ResponseFault("stall", object_get(faulty.bucket, "Timeseries/big.csv"), 12 << 20)
    s3_proxy.faults.append(stall)

    started = await faulty.client.post("/ingest/timeseries")
    connection = await faulty.timeseries()
    try:
        # The first attempt has written readings in its still open transaction.
        await wait_until(lambda: stall.stalled == 1, "the transfer stalls")
        await wait_until(
            lambda: connection.fetchval(
                """
                SELECT count(*) > 0 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                WHERE l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND c.relname = 'readings' AND l.mode = 'RowExclusiveLock'
                """
            ),
            "the first attempt writes into readings",
        )
    finally:
        await connection.close()
    stall.reset_stalled()

    job = await wait_for_job(faulty.client, started.json()["id"])
    assert job["status"] == "succeeded", job
    # Had anything of the first attempt stayed, the second would have met it as duplicates.
    assert (job["rows_inserted"], job["rows_duplicate"]) == (expected_rows, 0)
    assert s3_proxy.requests_containing(object_get(faulty.bucket, "Timeseries/big.csv")) == 2
    assert await committed(faulty.settings) == (
        expected_rows,
        expected_rows,
        {"Timeseries/big.csv": expected_rows},
    )
    await assert_sensor_stats_match_readings(faulty.settings.timeseries_database_url)


async def test_a_stalled_transfer_times_out_and_the_object_is_loaded_again(
    settings: Settings, s3: S3Client, s3_proxy: FaultProxy
) -> None:
    service = fault_settings(settings, s3_proxy, s3_read_timeout_seconds=2.0)
    async with ingest_environment(service, s3) as faulty:
        (key,) = await put_small_objects(faulty, ["slow"], 20_000)
        s3_proxy.faults.append(ResponseFault("stall", object_get(faulty.bucket, key), 256 << 10))
        job = await run_job(faulty.client, "/ingest/timeseries")
    assert job["status"] == "succeeded", job
    assert (job["rows_inserted"], job["rows_duplicate"], job["errors"]) == (20_000, 0, [])
    assert s3_proxy.requests_containing(object_get(faulty.bucket, key)) == 2


async def test_an_object_that_fails_every_attempt_is_reported_and_the_others_load(
    faulty: IngestEnvironment, s3_proxy: FaultProxy
) -> None:
    keys = await put_small_objects(faulty, ["a", "broken", "c"], 1_000)
    broken = keys[1]
    reset = ResponseFault("reset", object_get(faulty.bucket, broken), 4096, times=None)
    s3_proxy.faults.append(reset)

    job = await run_job(faulty.client, "/ingest/timeseries")
    assert job["status"] == "completed_with_errors", job
    assert (job["objects_done"], job["objects_total"], job["rows_inserted"]) == (2, 3, 2_000)
    assert job["result"]["objects_failed"] == 1
    (error,) = job["errors"]
    assert (error["object_key"], error["line_number"]) == (broken, None)
    assert error["reason"].startswith(f"not loaded: GET s3://{faulty.bucket}/{broken}: ")
    assert error["reason"].endswith("(tried 3 times); a new job tries it again")
    assert reset.hits == 3

    s3_proxy.faults.clear()
    again = await run_job(faulty.client, "/ingest/timeseries")
    assert again["status"] == "succeeded", again
    assert (again["result"]["objects_skipped"], again["rows_inserted"]) == (2, 1_000)
    assert (await committed(faulty.settings))[:2] == (3_000, 3_000)


async def test_a_listing_that_keeps_failing_fails_the_job_with_the_reason(
    faulty: IngestEnvironment, s3_proxy: FaultProxy
) -> None:
    await put_small_objects(faulty, ["a"], 10)
    s3_proxy.faults.append(ResponseFault("reset", b"list-type=2", times=None))
    job = await run_job(faulty.client, "/ingest/timeseries")
    assert job["status"] == "failed", job
    reason = job["failure_reason"]
    assert reason.startswith(f"could not list the objects: LIST s3://{faulty.bucket}/Timeseries/:")
    assert reason.endswith("(tried 3 times)")
    # Per attempt, aiohttp may resend once a request whose reused connection died before
    # any response (RFC 9112): between 3 and 6 requests.
    assert 3 <= s3_proxy.requests_containing(b"list-type=2") <= 6


async def test_an_object_store_that_stops_answering_fails_the_job_after_one_object(
    settings: Settings, s3: S3Client, s3_proxy: FaultProxy
) -> None:
    service = fault_settings(settings, s3_proxy, ingest_workers=1)
    async with ingest_environment(service, s3) as faulty:
        keys = await put_small_objects(faulty, ["a", "b", "c"], 10)
        for request in (f"GET /{faulty.bucket}/Timeseries/", f"HEAD /{faulty.bucket} "):
            s3_proxy.faults.append(ResponseFault("reset", request.encode(), times=None))
        job = await run_job(faulty.client, "/ingest/timeseries")
    assert job["status"] == "failed", job
    assert job["failure_reason"].startswith("the object store stopped answering: ")
    assert f"{keys[0]} was not loaded" in job["failure_reason"]
    # Three attempts at the first object, then the store was found down: none at the two
    # others, which would only have failed the same way, slowly.
    assert 3 <= s3_proxy.requests_containing(object_get(faulty.bucket, keys[0])) <= 6
    assert s3_proxy.requests_containing(b"Timeseries/b.csv") == 0
    assert s3_proxy.requests_containing(b"Timeseries/c.csv") == 0
    assert [e["object_key"] for e in job["errors"]] == [keys[0]]
    assert job["result"]["objects_failed"] == 1


async def test_a_mapping_transfer_cut_off_midway_is_read_again_from_the_start(
    faulty: IngestEnvironment, s3_proxy: FaultProxy
) -> None:
    pairs = sensors(3_000)
    await faulty.put("mapping.csv", mapping_csv(pairs))
    get = object_get(faulty.bucket, "mapping.csv")
    s3_proxy.faults.append(ResponseFault("reset", get, 16384))
    job = await run_job(faulty.client, "/ingest/mapping")
    assert job["status"] == "succeeded", job
    assert (job["rows_read"], job["rows_inserted"]) == (3_000, 3_000)
    assert s3_proxy.requests_containing(get) == 2


# --- database restart ----------------------------------------------------------------------


def through(proxy: FaultProxy, dsn: str) -> str:
    parts = urlsplit(dsn)
    user, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}{at}{proxy.host}:{proxy.port}"))


async def terminate_backends(settings: Settings) -> int:
    """What a database restart does to the service's sessions: each is ended, mid-command
    or idle, and its transaction rolled back."""
    names = [
        urlsplit(url).path.lstrip("/")
        for url in (
            settings.metadata_database_url,
            settings.timeseries_database_url,
        )
    ]
    rows = await fetch(
        ADMIN_POSTGRES_URL,
        """
        SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS ended
        FROM pg_stat_activity WHERE datname = ANY($1::text[]) AND pid <> pg_backend_pid()
        """,
        names,
    )
    return int(rows[0]["ended"])


async def test_a_database_restart_mid_job_fails_it_and_a_new_job_loads_exactly_the_rest(
    settings: Settings,
    s3_proxy: FaultProxy,
    reference: Reference,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="app.jobs.service")
    target = urlsplit(settings.metadata_database_url)
    assert target.hostname is not None
    assert target.port is not None
    database = await FaultProxy(target.hostname, target.port).start()
    service = fault_settings(
        settings,
        s3_proxy,
        s3_bucket=reference.bucket,
        metadata_database_url=through(database, settings.metadata_database_url),
        timeseries_database_url=through(database, settings.timeseries_database_url),
    )
    # The job cannot finish while this object's transfer is held: no race with its speed.
    held = ResponseFault("stall", object_get(reference.bucket, reference.keys[10]))
    s3_proxy.faults.append(held)
    await empty_databases(settings)
    try:
        async with running_app(service) as client:
            assert (await run_job(client, "/ingest/mapping"))["status"] == "succeeded"
            job_id = (await client.post("/ingest/timeseries")).json()["id"]
            await wait_for_progress(client, job_id)

            database.refuse()
            assert await terminate_backends(settings) > 0
            held.resume()
            # The job ends while the database is still down; recording that must wait.
            await wait_until(
                lambda: "could not record the end of job" in caplog.text,
                "the job tries to record its end",
            )
            await database.accept()

            failed = await wait_for_job(client, job_id)
            assert failed["status"] == "failed", failed
            assert failed["failure_reason"].startswith("lost the "), failed
            assert "a new job resumes after" in failed["failure_reason"]
            assert 0 < failed["objects_done"] < failed["objects_total"]
            loaded, _ = await assert_no_partial_object(settings, reference)
            assert reference.keys[10] not in loaded  # in flight, so rolled back

            resumed = await run_job(client, "/ingest/timeseries")
            assert resumed["status"] == "succeeded", resumed
            assert resumed["result"]["objects_skipped"] == len(loaded)
    finally:
        await database.close()
    assert await fingerprint(settings) == reference.fingerprint
    await assert_sensor_stats_match_readings(settings.timeseries_database_url)


# --- graceful shutdown ---------------------------------------------------------------------


async def test_sigterm_mid_job_cancels_it_at_a_batch_boundary_and_a_new_job_loads_the_rest(
    settings: Settings, s3_proxy: FaultProxy, reference: Reference, tmp_path: Path
) -> None:
    await empty_databases(settings)
    held = ResponseFault("stall", object_get(reference.bucket, reference.keys[10]))
    s3_proxy.faults.append(held)
    log = tmp_path / "server.log"
    service = settings.model_copy(
        update={"s3_endpoint_url": s3_proxy.url, "s3_bucket": reference.bucket}
    )
    server = ServerProcess(
        service,
        free_port_block((0,)),
        log,
        # No analysis processes: this test needs none, and they cost startup time.
        environment={"ANALYSIS_PREWARM": "false", "ANALYSIS_WORKERS": "1"},
    )
    try:
        await server.start()
        async with server.client() as client:
            assert (await run_job(client, "/ingest/mapping"))["status"] == "succeeded"
            job_id = (await client.post("/ingest/timeseries")).json()["id"]
            await wait_for_progress(client, job_id)

        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        # The shutdown has asked the job to stop; the held transfer then completes, and
        # the object in flight must be rolled back at its batch boundary.
        await wait_until(
            lambda: "shutting down: stopping 1 running job(s)" in log.read_text(),
            "the lifespan shutdown reaches the job supervisor",
        )
        held.resume()
        # uvicorn re-raises the signal once its graceful shutdown is done, so the expected
        # status of a clean exit is "terminated by SIGTERM", not 0.
        assert await server.exited() == -signal.SIGTERM, log.read_text()
        assert "Traceback" not in log.read_text()
        assert "ERROR" not in log.read_text()
    finally:
        server.stop()
    loaded, stored = await assert_no_partial_object(settings, reference)

    # What the shutdown recorded, and a new job (in-process: any process will do).
    async with running_app(service) as client:
        stopped = await wait_for_job(client, job_id)
        resumed = await run_job(client, "/ingest/timeseries")
    assert stopped["status"] == "cancelled", stopped
    assert stopped["failure_reason"] == SHUTDOWN_REASON
    assert 0 < stopped["objects_done"] == len(loaded) < stopped["objects_total"]
    assert stopped["rows_inserted"] == stored
    # In flight when the stop came: read to its batch boundary, then rolled back.
    assert reference.keys[10] not in loaded
    assert resumed["status"] == "succeeded", resumed
    assert resumed["result"]["objects_skipped"] == len(loaded)
    assert await fingerprint(settings) == reference.fingerprint
    await assert_sensor_stats_match_readings(settings.timeseries_database_url)
