"""Dependency aliases, declared once and used by every router."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from app.core.config import Settings
from app.core.db import Connection
from app.core.lifespan import Resources
from app.storage.s3 import S3Client


# These are `async def` although they never await: FastAPI runs a plain `def` dependency
# in its thread pool, and that hand-off cost more than the rest of a readings request.
async def get_resources(request: Request) -> Resources:
    resources: Resources = request.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_settings(resources: ResourcesDep) -> Settings:
    return resources.settings


async def get_s3(resources: ResourcesDep) -> S3Client:
    return resources.s3


async def metadata_connection(resources: ResourcesDep) -> AsyncIterator[Connection]:
    """A metadata connection whose transaction the request owns."""
    async with resources.metadata_pool.acquire() as connection, connection.transaction():
        yield connection


async def timeseries_connection(resources: ResourcesDep) -> AsyncIterator[Connection]:
    """A timeseries connection whose transaction the request owns."""
    async with resources.timeseries_pool.acquire() as connection, connection.transaction():
        yield connection


SettingsDep = Annotated[Settings, Depends(get_settings)]
S3Dep = Annotated[S3Client, Depends(get_s3)]
MetaConn = Annotated[Connection, Depends(metadata_connection)]
TsConn = Annotated[Connection, Depends(timeseries_connection)]
