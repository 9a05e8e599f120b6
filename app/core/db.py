"""asyncpg pools for the two databases: codecs are registered once, in the pool's init."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

logger = logging.getLogger(__name__)

# What repositories take: a plain connection or one borrowed from a pool.
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy
# Where `COPY ... TO STDOUT` output goes, chunk by chunk (asyncpg's `output=` coroutine).
CopySink: TypeAlias = Callable[[bytes], Coroutine[Any, Any, None]]

# What "the database is not up yet" looks like to asyncpg: refused or reset connections, a
# server still starting, or DNS not yet resolving a compose service name.
TRANSIENT_CONNECT_ERRORS = (
    OSError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.TooManyConnectionsError,
    TimeoutError,
)

# What a database restart, a failover or a terminated backend looks like to asyncpg, as
# opposed to an error of the SQL itself: the connection broke mid-command
# (ConnectionDoesNotExistError), was refused or reset (OSError), the server is shutting
# down or starting, or the connection is already known to be closed. The last one is an
# InterfaceError: asyncpg raises it for any later use, e.g. the ROLLBACK that ends a
# transaction whose backend was killed.
CONNECTION_LOST_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
)


def _dump_json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(connection: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name, encoder=_dump_json, decoder=orjson.loads, schema="pg_catalog"
        )


# The protocol between writers of readings and sensor deletion (timeseries database; see
# db_init/timeseries/0004_deleted_sensors.sql): writers hold it shared for their
# transaction and skip uuids in deleted_sensors; a deletion holds it exclusively.
READINGS_DELETE_LOCK_KEY: Final = 7_402_113_201


async def create_pool(
    dsn: str,
    *,
    application_name: str,
    min_size: int,
    max_size: int,
    command_timeout: float,
    statement_timeout: float = 0.0,
) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min(min_size, max_size),
        max_size=max_size,
        command_timeout=command_timeout,
        init=_init_connection,
        # Sessions run in UTC so that any server-side rendering of timestamptz is unambiguous.
        server_settings={
            "application_name": application_name,
            "timezone": "UTC",
            # PostgreSQL stops a runaway query itself (asyncpg's command_timeout only
            # gives up waiting on the client side).
            "statement_timeout": str(round(statement_timeout * 1000)),
        },
    )
    assert pool is not None
    return pool


async def connect_with_retry(dsn: str, *, timeout_seconds: float) -> asyncpg.Connection:
    """One connection, retried with backoff while the server is still coming up."""
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(timeout_seconds),
        wait=wait_exponential(multiplier=0.2, max=2.0),
        retry=retry_if_exception_type(TRANSIENT_CONNECT_ERRORS),
        reraise=True,
    ):
        with attempt:
            return await asyncpg.connect(dsn, timeout=5, server_settings={"timezone": "UTC"})
    raise AssertionError("unreachable: tenacity reraises the last error")
