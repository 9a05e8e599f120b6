"""The sensor registry: list, read, register, change, and delete with the readings.

Deleting a sensor spans two databases, so it runs in three idempotent steps, each
committed on its own:

1. metadata: the sensor is marked `deleting_since`; from then on no lookup finds it, so no
   reader or writer reaches it by name or uuid;
2. timeseries: its uuid goes into `deleted_sensors` and its readings and summary are
   deleted, in one transaction that holds off every writer of readings;
3. metadata: its row is deleted.

A crash after step 1 leaves a marked sensor and possibly its readings, never readings
without a sensor: DELETE again (or the next startup) repeats steps 2 and 3.
"""

from __future__ import annotations

import logging
import uuid as uuids
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

from app.core.db import Connection
from app.core.pagination import decode_cursor, encode_cursor
from app.jobs import repository as jobs_repository
from app.jobs.schemas import JobKind
from app.sensors import repository
from app.sensors.exceptions import (
    DeleteBlockedByIngestion,
    InvalidSensorChange,
    SensorExists,
    SensorNotFound,
)
from app.sensors.schemas import Sensor, SensorCreate, SensorDeleted, SensorPage, SensorPatch

if TYPE_CHECKING:  # the lifespan imports this module to finish interrupted deletes
    from app.core.lifespan import Resources

logger = logging.getLogger(__name__)


def _sensor(record: asyncpg.Record, stats: asyncpg.Record | None) -> Sensor:
    return Sensor(
        name=record["sensor_name"],
        uuid=record["sensor_uuid"],
        type=record["sensor_type"],
        unit=record["unit"],
        location=record["location"],
        active=record["active"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        updated_by=record["updated_by"],
        first_timestamp=stats["first_ts"] if stats else None,
        last_timestamp=stats["last_ts"] if stats else None,
        reading_count=stats["reading_count"] if stats else 0,
    )


async def sensor_by_name(metadata: Connection, sensor_name: str) -> asyncpg.Record:
    record = await repository.fetch_by_name(metadata, sensor_name)
    if record is None:
        raise SensorNotFound(sensor_name)
    return record


async def get_sensor(metadata: Connection, timeseries: Connection, sensor_name: str) -> Sensor:
    record = await sensor_by_name(metadata, sensor_name)
    stats = await repository.fetch_stats(timeseries, [record["sensor_uuid"]])
    return _sensor(record, stats.get(record["sensor_uuid"]))


async def list_sensors(
    metadata: Connection,
    timeseries: Connection,
    *,
    prefix: str | None,
    location: str | None,
    sensor_type: str | None,
    active: bool | None,
    cursor: str | None,
    limit: int,
) -> SensorPage:
    after = decode_cursor(cursor, {"name"})["name"] if cursor else None
    records = await repository.list_by_name(
        metadata,
        prefix=prefix,
        after=after,
        limit=limit + 1,
        location=location,
        sensor_type=sensor_type,
        active=active,
    )
    has_more = len(records) > limit
    records = records[:limit]
    stats = await repository.fetch_stats(timeseries, [r["sensor_uuid"] for r in records])
    items = [_sensor(record, stats.get(record["sensor_uuid"])) for record in records]
    next_cursor = encode_cursor({"name": records[-1]["sensor_name"]}) if has_more else None
    return SensorPage(items=items, next_cursor=next_cursor, has_more=has_more)


def _taken(owner: asyncpg.Record, name: str) -> SensorExists:
    held = "name" if owner["sensor_name"] == name else "uuid"
    detail = f"the {held} is taken by sensor {owner['sensor_name']!r}"
    if owner["deleting_since"] is not None:
        detail += ", whose deletion did not finish: DELETE it again to finish"
    return SensorExists(detail, owner["sensor_uuid"])


async def create_sensor(resources: Resources, body: SensorCreate, updated_by: str | None) -> Sensor:
    sensor_uuid = body.uuid or uuids.uuid4()
    async with resources.metadata_pool.acquire() as metadata:
        owner = await repository.owner_of(metadata, name=body.name, sensor_uuid=sensor_uuid)
    if owner is not None:
        raise _taken(owner, body.name)
    # A uuid deleted before may be registered again: its readings may be written again.
    async with resources.timeseries_pool.acquire() as timeseries:
        await repository.forget_deletion(timeseries, sensor_uuid)
    async with resources.metadata_pool.acquire() as metadata:
        try:
            record = await repository.insert_sensor(
                metadata,
                sensor_uuid=sensor_uuid,
                name=body.name,
                sensor_type=body.type,
                unit=body.unit,
                location=body.location,
                active=body.active,
                updated_by=updated_by,
            )
        except asyncpg.UniqueViolationError:
            # Registered by someone else between the check and the insert.
            owner = await repository.owner_of(metadata, name=body.name, sensor_uuid=sensor_uuid)
            raise (
                _taken(owner, body.name)
                if owner
                else SensorExists("the name or uuid is taken", sensor_uuid)
            ) from None
    return _sensor(record, None)


async def update_sensor(
    resources: Resources, sensor_name: str, patch: SensorPatch, updated_by: str | None
) -> Sensor:
    changes: dict[str, Any] = {field: getattr(patch, field) for field in patch.model_fields_set}
    for field in ("name", "active"):
        if field in changes and changes[field] is None:
            raise InvalidSensorChange(f"{field}: cannot be null", context={"parameter": field})
    async with resources.metadata_pool.acquire() as metadata:
        try:
            if changes:
                record = await repository.update_sensor(metadata, sensor_name, changes, updated_by)
            else:
                record = await repository.fetch_by_name(metadata, sensor_name)
        except asyncpg.UniqueViolationError:
            raise SensorExists(f"the name {changes['name']!r} is taken") from None
    if record is None:
        raise SensorNotFound(sensor_name)
    # Other processes learn of the change by notification; this one at once.
    resources.sensors.invalidate()
    async with resources.timeseries_pool.acquire() as timeseries:
        stats = await repository.fetch_stats(timeseries, [record["sensor_uuid"]])
    return _sensor(record, stats.get(record["sensor_uuid"]))


async def delete_sensor(resources: Resources, sensor_name: str) -> SensorDeleted:
    async with resources.metadata_pool.acquire() as metadata:
        # The batch loader reads the registry once per job: it could write a deleted
        # sensor's readings again. Live writes check for deletions in their transaction.
        job_id = await jobs_repository.active_job_id(metadata, JobKind.INGEST_TIMESERIES)
        if job_id is not None:
            raise DeleteBlockedByIngestion(sensor_name, job_id)
        sensor_uuid = await repository.mark_deleting(metadata, sensor_name)
    if sensor_uuid is None:
        raise SensorNotFound(sensor_name)
    resources.sensors.invalidate()
    deleted = await finish_delete(resources.metadata_pool, resources.timeseries_pool, sensor_uuid)
    return SensorDeleted(name=sensor_name, uuid=sensor_uuid, readings_deleted=deleted)


async def finish_delete(
    metadata_pool: asyncpg.Pool, timeseries_pool: asyncpg.Pool, sensor_uuid: UUID
) -> int:
    """Steps 2 and 3 of a delete; both idempotent."""
    async with timeseries_pool.acquire() as timeseries, timeseries.transaction():
        deleted = await repository.delete_readings(timeseries, sensor_uuid)
    async with metadata_pool.acquire() as metadata:
        await repository.remove_sensor(metadata, sensor_uuid)
    return deleted


async def finish_pending_deletes(
    metadata_pool: asyncpg.Pool, timeseries_pool: asyncpg.Pool
) -> None:
    """At startup: deletes a crash interrupted after step 1 are completed."""
    async with metadata_pool.acquire() as metadata:
        if await jobs_repository.active_job_id(metadata, JobKind.INGEST_TIMESERIES):
            return  # the next DELETE of those sensors, or the next startup, finishes them
        pending = await repository.pending_deletes(metadata)
    for record in pending:
        deleted = await finish_delete(metadata_pool, timeseries_pool, record["sensor_uuid"])
        logger.warning(
            "finished the interrupted delete of sensor %r (%s readings)",
            record["sensor_name"],
            deleted,
        )
