"""Versioned SQL migrations from `db_init/<component>/NNNN_name.sql`.

Each file runs once, in its own transaction, and is recorded in `schema_migrations` with
a checksum. Replicas starting together serialise on an advisory lock, so a migration is
never applied twice. An applied file whose content changed is refused: fix forward with a
new file instead of editing history.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import asyncpg

logger = logging.getLogger(__name__)

MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
# Arbitrary, fixed key: every replica must use the same one.
MIGRATION_LOCK_KEY = 7_402_113_001


class Database(StrEnum):
    METADATA = "metadata"
    TIMESERIES = "timeseries"


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path) -> list[Migration]:
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    migrations = []
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = MIGRATION_FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_snake_name.sql")
        migrations.append(Migration(match["version"], match["name"], path.read_text()))
    versions = [m.version for m in migrations]
    if len(versions) != len(set(versions)):
        raise MigrationError(f"{directory}: two migration files share a version number")
    return migrations


async def apply_migrations(
    connection: asyncpg.Connection, database: Database, migrations_root: Path
) -> list[str]:
    """Apply what is pending; return the versions applied now."""
    migrations = load_migrations(migrations_root / database.value)
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await connection.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                database   text        NOT NULL,
                version    text        NOT NULL,
                name       text        NOT NULL,
                checksum   text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (database, version)
            )
            """
        )
        rows = await connection.fetch(
            "SELECT version, checksum FROM schema_migrations WHERE database = $1", database.value
        )
        applied = {row["version"]: row["checksum"] for row in rows}
        applied_now = []
        for migration in migrations:
            recorded_checksum = applied.get(migration.version)
            if recorded_checksum is not None:
                if recorded_checksum != migration.checksum:
                    raise MigrationError(
                        f"{database.value} migration {migration.version}_{migration.name} was "
                        "edited after it was applied; add a new migration instead"
                    )
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (database, version, name, checksum) "
                    "VALUES ($1, $2, $3, $4)",
                    database.value,
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            logger.info("applied %s migration %s_%s", database, migration.version, migration.name)
            applied_now.append(migration.version)
        return applied_now
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
