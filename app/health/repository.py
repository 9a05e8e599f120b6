from __future__ import annotations

from app.core.db import Connection


async def server_version(connection: Connection) -> str:
    version: str = await connection.fetchval("SHOW server_version")
    return version


async def readings_storage(connection: Connection) -> str | None:
    """The storage path the timeseries migration chose, or None before it ran."""
    exists = await connection.fetchval("SELECT to_regprocedure('readings_storage()') IS NOT NULL")
    if not exists:
        return None
    storage: str = await connection.fetchval("SELECT readings_storage()")
    return storage
