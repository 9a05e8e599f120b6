"""Small async helpers shared by the tests."""

from __future__ import annotations

import asyncpg

from app.core.config import REPOSITORY_ROOT
from app.core.migrations import Database, apply_migrations


async def migrate_fresh_databases(metadata_url: str, timeseries_url: str) -> None:
    for database, url in ((Database.METADATA, metadata_url), (Database.TIMESERIES, timeseries_url)):
        connection = await asyncpg.connect(url)
        try:
            await apply_migrations(connection, database, REPOSITORY_ROOT / "db_init")
        finally:
            await connection.close()
