from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from app.core.config import REPOSITORY_ROOT
from app.core.migrations import Database, MigrationError, apply_migrations, load_migrations
from app.devstack.postgres import with_database
from tests.conftest import ADMIN_POSTGRES_URL


@pytest.fixture
async def empty_database_url() -> AsyncIterator[str]:
    name = f"sensor_test_migrations_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_POSTGRES_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(ADMIN_POSTGRES_URL, name)
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def empty_database(empty_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(empty_database_url)
    try:
        yield connection
    finally:
        await connection.close()


def test_migration_files_are_versioned_and_ordered() -> None:
    for database in Database:
        migrations = load_migrations(REPOSITORY_ROOT / "db_init" / database.value)
        assert migrations, database
        versions = [m.version for m in migrations]
        assert versions == sorted(versions)


async def test_each_migration_is_applied_once_and_recorded(
    empty_database: asyncpg.Connection,
) -> None:
    root = REPOSITORY_ROOT / "db_init"
    first = await apply_migrations(empty_database, Database.TIMESERIES, root)
    second = await apply_migrations(empty_database, Database.TIMESERIES, root)
    assert first == [m.version for m in load_migrations(root / "timeseries")]
    assert second == []
    recorded = await empty_database.fetch(
        "SELECT database, version, checksum FROM schema_migrations ORDER BY version"
    )
    assert [(r["database"], r["version"]) for r in recorded] == [("timeseries", v) for v in first]


async def test_both_databases_can_share_one_server_database(
    empty_database: asyncpg.Connection,
) -> None:
    root = REPOSITORY_ROOT / "db_init"
    await apply_migrations(empty_database, Database.METADATA, root)
    await apply_migrations(empty_database, Database.TIMESERIES, root)
    databases = await empty_database.fetch("SELECT DISTINCT database FROM schema_migrations")
    assert {r["database"] for r in databases} == {"metadata", "timeseries"}


async def test_concurrent_migrators_apply_each_file_once(empty_database_url: str) -> None:
    connections = [await asyncpg.connect(empty_database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(
                apply_migrations(c, Database.METADATA, REPOSITORY_ROOT / "db_init")
                for c in connections
            )
        )
    finally:
        for connection in connections:
            await connection.close()
    applied = [version for result in results for version in result]
    assert sorted(applied) == [
        m.version for m in load_migrations(REPOSITORY_ROOT / "db_init/metadata")
    ]


async def test_an_edited_applied_migration_is_refused(
    empty_database: asyncpg.Connection, tmp_path: Path
) -> None:
    shutil.copytree(REPOSITORY_ROOT / "db_init", tmp_path / "db_init")
    await apply_migrations(empty_database, Database.METADATA, tmp_path / "db_init")
    edited = next((tmp_path / "db_init/metadata").glob("0001_*.sql"))
    edited.write_text(edited.read_text() + "\n-- edited afterwards\n")
    with pytest.raises(MigrationError, match="edited after it was applied"):
        await apply_migrations(empty_database, Database.METADATA, tmp_path / "db_init")


async def test_a_failing_migration_leaves_nothing_behind(
    empty_database: asyncpg.Connection, tmp_path: Path
) -> None:
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata/0001_ok.sql").write_text("CREATE TABLE kept (id int);")
    (tmp_path / "metadata/0002_broken.sql").write_text(
        "CREATE TABLE half_done (id int); SELECT no_such_function();"
    )
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await apply_migrations(empty_database, Database.METADATA, tmp_path)
    assert await empty_database.fetchval("SELECT to_regclass('kept') IS NOT NULL")
    assert await empty_database.fetchval("SELECT to_regclass('half_done') IS NULL")
    versions = await empty_database.fetch("SELECT version FROM schema_migrations")
    assert [r["version"] for r in versions] == ["0001"]


async def test_plain_postgres_readings_are_partitioned_by_month(
    empty_database: asyncpg.Connection,
) -> None:
    await apply_migrations(empty_database, Database.TIMESERIES, REPOSITORY_ROOT / "db_init")
    assert await empty_database.fetchval("SELECT readings_storage()") == "postgresql-partitioned"
    created = await empty_database.fetchval(
        "SELECT ensure_readings_partitions($1, $2)",
        datetime(2012, 12, 31, 22, 53, tzinfo=UTC),
        datetime(2013, 2, 14, tzinfo=UTC),
    )
    assert created == 3
    again = await empty_database.fetchval(
        "SELECT ensure_readings_partitions($1, $2)",
        datetime(2013, 1, 5, tzinfo=UTC),
        datetime(2013, 1, 6, tzinfo=UTC),
    )
    assert again == 0
    partitions = await empty_database.fetch(
        "SELECT inhrelid::regclass::text AS name FROM pg_inherits "
        "WHERE inhparent = 'readings'::regclass ORDER BY 1"
    )
    assert [p["name"] for p in partitions] == [
        "readings_default",
        "readings_p201212",
        "readings_p201301",
        "readings_p201302",
    ]


async def test_rows_parked_in_the_default_partition_move_into_a_new_month(
    empty_database: asyncpg.Connection,
) -> None:
    await apply_migrations(empty_database, Database.TIMESERIES, REPOSITORY_ROOT / "db_init")
    sensor = uuid.uuid4()
    instants = [datetime(2014, 3, day, tzinfo=UTC) for day in (1, 2, 30)]
    await empty_database.executemany(
        "INSERT INTO readings (ts, sensor_uuid, value) VALUES ($1, $2, 1.5)",
        [(instant, sensor) for instant in instants],
    )
    await empty_database.fetchval(
        "SELECT ensure_readings_partitions($1, $1)", datetime(2014, 3, 15, tzinfo=UTC)
    )
    placement = await empty_database.fetch(
        "SELECT tableoid::regclass::text AS partition, count(*) FROM readings GROUP BY 1"
    )
    assert [(p["partition"], p["count"]) for p in placement] == [("readings_p201403", 3)]


async def test_a_sensor_instant_pair_is_stored_once(empty_database: asyncpg.Connection) -> None:
    await apply_migrations(empty_database, Database.TIMESERIES, REPOSITORY_ROOT / "db_init")
    sensor, instant = uuid.uuid4(), datetime(2013, 6, 1, tzinfo=UTC)
    insert = "INSERT INTO readings (ts, sensor_uuid, value) VALUES ($1, $2, $3)"
    await empty_database.execute(insert, instant, sensor, 1.0)
    with pytest.raises(asyncpg.UniqueViolationError):
        await empty_database.execute(insert, instant, sensor, 2.0)


async def test_one_sensor_time_range_is_an_index_only_scan(
    empty_database: asyncpg.Connection,
) -> None:
    await apply_migrations(empty_database, Database.TIMESERIES, REPOSITORY_ROOT / "db_init")
    await empty_database.fetchval("SELECT ensure_readings_partitions('2013-01-01', '2013-01-31')")
    await empty_database.execute(
        """
        INSERT INTO readings (ts, sensor_uuid, value)
        SELECT '2013-01-01'::timestamptz + n * interval '1 minute',
               ('00000000-0000-0000-0000-' || lpad((n % 50)::text, 12, '0'))::uuid,
               n
        FROM generate_series(0, 40000) AS n
        """
    )
    await empty_database.execute("VACUUM ANALYZE readings")
    plan = await empty_database.fetchval(
        "EXPLAIN SELECT ts, value FROM readings WHERE sensor_uuid = $1 "
        "AND ts >= '2013-01-05' AND ts < '2013-01-06' ORDER BY ts",
        uuid.UUID("00000000-0000-0000-0000-000000000007"),
    )
    assert "Index Only Scan" in plan
    assert "readings_p201301" in plan
    assert "readings_default" not in plan


async def test_metadata_allows_one_active_job_per_kind(empty_database: asyncpg.Connection) -> None:
    await apply_migrations(empty_database, Database.METADATA, REPOSITORY_ROOT / "db_init")
    insert = "INSERT INTO jobs (id, kind, status) VALUES ($1, 'ingest_timeseries', $2)"
    await empty_database.execute(insert, uuid.uuid4(), "succeeded")
    await empty_database.execute(insert, uuid.uuid4(), "running")
    with pytest.raises(asyncpg.UniqueViolationError):
        await empty_database.execute(insert, uuid.uuid4(), "queued")


async def test_sensor_names_and_uuids_are_unique(empty_database: asyncpg.Connection) -> None:
    await apply_migrations(empty_database, Database.METADATA, REPOSITORY_ROOT / "db_init")
    insert = "INSERT INTO sensors (sensor_uuid, sensor_name) VALUES ($1, $2)"
    first = uuid.uuid4()
    await empty_database.execute(insert, first, "sensor_00001")
    with pytest.raises(asyncpg.UniqueViolationError):
        await empty_database.execute(insert, uuid.uuid4(), "sensor_00001")
    with pytest.raises(asyncpg.UniqueViolationError):
        await empty_database.execute(insert, first, "sensor_00002")


async def test_concurrent_callers_create_a_new_month_once(
    empty_database: asyncpg.Connection, empty_database_url: str
) -> None:
    await apply_migrations(empty_database, Database.TIMESERIES, REPOSITORY_ROOT / "db_init")
    callers = [await asyncpg.connect(empty_database_url) for _ in range(6)]
    try:
        # Every session has looked the partition up (and cached its absence) before one of
        # them creates it while the others wait for the lock.
        for caller in callers:
            assert await caller.fetchval("SELECT to_regclass('readings_p201507')") is None
        month = datetime(2015, 7, 10, tzinfo=UTC)
        ensure = "SELECT ensure_readings_partitions($1, $1)"
        created = await asyncio.gather(*(caller.fetchval(ensure, month) for caller in callers))
        assert sorted(created) == [0, 0, 0, 0, 0, 1]
    finally:
        for caller in callers:
            await caller.close()
